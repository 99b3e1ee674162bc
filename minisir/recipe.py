"""YAML recipe -> validated, fully resolved configuration.

Every section's defaults live in the module that uses them (grpo.TrainerConfig,
methods.opensir.OpenSIRConfig, ...); this module only composes them, so there is one
source of truth. Errors name the recipe file and the field path and say what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .assets import is_hub_ref, parse_hub_ref
from .errors import RecipeError
from .evaluate import EvalConfig
from .methods import DEFAULT_METHOD, METHODS, method_config
from .grpo import TrainerConfig

# run.report_to's choices; minisir/trackers.py has one adapter per name (imported only by a run).
Tracker = Literal["tensorboard", "wandb", "trackio", "mlflow"]
TRACKERS: tuple[str, ...] = get_args(Tracker)


class ModelConfig(BaseModel):
    """Which policy model to sample and train, and how to prompt it.

    Hub references are only checked for their shape here: the download (or cache look-up)
    happens when the run starts, so a recipe validates on a machine that lacks the model.
    """

    model_config = ConfigDict(extra="forbid")

    gguf: str = Field("bundled", description=(
        'GGUF file for sampling: a path, "bundled" (Gemma 3 270M), or hf://OWNER/REPO[@REVISION]/FILE.gguf '
        "(fetched into the Hugging Face cache)"))
    hf_dir: str | None = Field(None, description=(
        "HF checkpoint to train (a directory or hf://OWNER/REPO[@REVISION]); default: dequantise the GGUF"))
    prompt_style: Literal["auto", "completion", "chat"] = Field(
        "auto", description="auto = chat when the GGUF carries a chat template, else few-shot completion"
    )

    @field_validator("gguf", "hf_dir")
    @classmethod
    def _hub_ref_shape(cls, value: str | None, info: ValidationInfo) -> str | None:
        if is_hub_ref(value):
            parse_hub_ref(value, want_file=info.field_name == "gguf")  # ValueError names what to write
        return value


class SamplerConfig(BaseModel):
    """llama.cpp engine settings."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(8192, ge=256, le=1_048_576, description="KV cells shared by all parallel sequences")
    n_parallel: int = Field(16, ge=1, le=255, description=(
        "sequences decoded together (llama.cpp holds 256 sequences; one keeps the prompts' shared prefix)"))
    n_threads: int | None = Field(None, ge=1, description="CPU threads; null = all cores")
    n_gpu_layers: int = Field(-1, ge=-1, description="-1 = all layers on the GPU when llama.cpp has one")
    adapter_scale: float = Field(1.0, ge=0.0, le=4.0, description="LoRA scale in the sampler")
    loop_repeats: int = Field(4, ge=0, le=64, description=(
        "stop a training completion whose text ends in this many copies of one 12-60 byte block: a loop that "
        "would run to its token limit without an answer (finish_reason loop, scored as truncated); 0 = never. "
        "Evaluations never stop loops; backend llama_cpp only"))
    backend: Literal["llama_cpp", "openai"] = Field("llama_cpp", description=(
        "llama_cpp = sample in this process; openai = on an OpenAI-compatible completions server at "
        "sampler.url that loads each step's adapter at runtime (vLLM: --enable-lora and "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"))
    url: str | None = Field(None, description=(
        "backend openai: the server's base URL, e.g. http://127.0.0.1:8000 (/v1 is added); it must "
        "see the run directory at the same path, to load adapters from it"))
    served_model: str | None = Field(None, description=(
        "backend openai: the base model's name on the server; null = the first one /v1/models lists"))
    max_concurrency: int = Field(8, ge=1, le=1024, description="backend openai: requests in flight at once")
    timeout_s: float = Field(600.0, gt=0, description=(
        "backend openai: seconds to wait for one answer before the step fails (it is retried on resume)"))

    @model_validator(mode="after")
    def _server_needs(self) -> "SamplerConfig":
        if self.loop_repeats == 1:
            raise ValueError("loop_repeats: 0 (never stop a loop) or at least 2 (copies of a block that make one)")
        if self.backend == "openai":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("backend openai needs sampler.url, the server's http(s):// base URL")
            if self.adapter_scale != 1.0:
                raise ValueError("backend openai applies adapters at scale 1: set sampler.adapter_scale to 1")
        return self


class RunConfig(BaseModel):
    """Length, randomness and where the run lives."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(100, ge=1, le=1_000_000, description="RL steps (optimizer updates); phase-0 steps come on top")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds every random stream: sampling, references, LoRA init")
    dir: str = Field("runs/default", min_length=1, description="run directory: archive, adapters, state")
    keep_adapters: int = Field(0, ge=0, description="GGUF adapters kept on disk; 0 = all")
    eval_every: int = Field(0, ge=0, description="evaluate on the `eval` section every N steps; 0 = never")
    next_command: str | None = Field(None, max_length=500, description=(
        "a command printed when the run ends, after the report/eval/browse hints: the quickstart names the "
        "recipe to run for real"))
    rounds_per_step: int = Field(1, ge=1, le=1024, description=(
        "sampling rounds pooled into one optimizer step (gradient accumulation): more groups per update, "
        "less noisy gradients; the recipes say how this compares with the papers' batch sizes"))
    report_to: list[Tracker] = Field(default_factory=list, description=(
        "live trackers that mirror each committed step's metrics (the step line's and the archive's names), "
        "in-run evals and the step's top problems: tensorboard (RUN/tb), wandb, trackio, mlflow "
        "(MLFLOW_TRACKING_URI); each needs its extra, e.g. pip install 'minisir[tensorboard]'; [] = none. "
        "A resumed run continues the same tracker run; a tracker that fails mid-run warns once and is dropped"))

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # --set run.report_to=tensorboard

    @field_validator("report_to")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        for name in value:
            if value.count(name) > 1:
                raise ValueError(f"{name} is listed twice")
        return value

    @field_validator("dir")
    @classmethod
    def _dir_writable(cls, value: str) -> str:
        path = Path(value).expanduser()
        probe = path
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise ValueError(f"{probe} is not a writable directory; choose another run.dir")
        return value


# The method union and its tags come from the one registry, methods.METHODS.
_METHOD_TAGS = tuple(METHODS)
Method = Annotated[Union[tuple(method_config(name) for name in _METHOD_TAGS)], Field(discriminator="name")]


class Recipe(BaseModel):
    """A whole run: model, sampler, method, trainer and run settings."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    method: Method = Field(default_factory=method_config(DEFAULT_METHOD))
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    eval: EvalConfig = Field(
        default_factory=lambda: EvalConfig(n_questions=20, k=2, max_tokens=256),
        description="held-out check run every run.eval_every steps (a small fixed subset)",
    )

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir).expanduser()

    def resolved(self) -> dict[str, Any]:
        """Every field with its default filled in: what the archive stores."""
        return self.model_dump(mode="json")


def current_defaults(section: str, stored: Any) -> Any:
    """A stored recipe section re-read with today's config class, so fields added since the run
    started take their defaults and resuming it is not refused for a knob it never set. A section
    that no longer validates is returned as stored (the comparison then shows what changed)."""
    classes: dict[str, type[BaseModel]] = {"model": ModelConfig, "sampler": SamplerConfig,
                                           "trainer": TrainerConfig, "run": RunConfig}
    cls = classes.get(section)
    if section == "method" and isinstance(stored, dict) and stored.get("name") in METHODS:
        cls = method_config(stored["name"])
    if cls is None or not isinstance(stored, dict):
        return stored
    try:
        return cls.model_validate(stored).model_dump(mode="json")
    except ValidationError:
        return stored


def _describe(err: dict[str, Any]) -> str:
    parts = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union"))]
    if len(parts) > 1 and parts[0] == "method" and parts[1] in _METHOD_TAGS:
        del parts[1]  # pydantic puts the union tag in the path: method.opensir.x -> method.x
    loc = ".".join(parts)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling"
    elif err["type"] == "union_tag_invalid":
        msg = f"unknown method; use name: {', '.join(_METHOD_TAGS)}"
        loc = loc or "method.name"
    elif err["type"] == "union_tag_not_found":
        msg = f"missing method.name; use one of {', '.join(_METHOD_TAGS)}"
    msg = msg.removeprefix("Value error, ")
    return f"{loc or '(top level)'}: {msg}"


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate a recipe mapping; raise RecipeError naming the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: the recipe must be a YAML mapping of sections, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise RecipeError(f"{source}: {_describe(errors[0])}{more}") from None


def load_recipe(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a YAML recipe file; `overrides` maps dotted keys to values."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; pass a YAML file such as recipes/quickstart.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise RecipeError(f"{path}: not valid YAML{line}; fix the syntax") from None
    if overrides:
        data = data if isinstance(data, dict) else {}
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise RecipeError(f"--set {dotted}: {key} holds a value, not a section; check the key path")
            node[leaf] = value
    return parse_recipe(data, str(path))
