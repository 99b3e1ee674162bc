"""Running an evaluation: EvalConfig, sampling and scoring (evaluate), one model or archive step
(run_eval), the result cache, and writing per-question records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ..answers import extract_boxed, matches
from ..atomic import atomic_file
from ..errors import MinisirError
from .benchmarks import load_benchmark
from .questions import Question
from .stats import EvalResult, aggregate, score_question

log = logging.getLogger(__name__)


class EvalConfig(BaseModel):
    """How to run one evaluation. Defaults follow OpenSIR's protocol (T=0.6, top-p 0.95)."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str = Field("gsm8k-100", description="gsm8k-100 | gsm-symbolic | arithmetic-easy | arithmetic-medium | "
                           "arithmetic-hard (= arithmetic) | path to a JSONL file")
    n_questions: int | None = Field(None, ge=1, description="questions to use; None = the benchmark's default")
    k: int = Field(4, ge=1, le=256, description="samples per question for pass@1 and maj@k")
    temperature: float = Field(0.6, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(384, ge=1, description="longest answer sampled; `minisir eval --max-tokens` has the same default")
    seed: int = Field(0, ge=0)
    greedy: bool = Field(True, description="also decode each question once greedily (temperature 0)")


PromptFn = Callable[[str, Any], str]  # (question text, chat renderer or None) -> prompt


def _prompt_name(prompt: PromptFn) -> str:
    return f"{getattr(prompt, '__module__', '?')}.{getattr(prompt, '__qualname__', type(prompt).__name__)}"


def evaluate(
    sampler: Any,
    questions: Sequence[Question],
    cfg: EvalConfig,
    chat: Callable[[list[dict]], str] | None = None,
    progress: bool = True,
    label: str = "",
    prompt: PromptFn | None = None,
    stop: Sequence[str] | None = None,
) -> EvalResult:
    """Sample k answers (and one greedy) per question with the solver prompt and score them.

    `prompt(question_text, chat)` renders one question; default: the OpenSIR student
    prompt, whose completion-style stop strings are then the default `stop`. Pass a
    method's own solver prompt (with its stop strings; `stop=None` with a custom prompt
    means none) so an eval asks the question the way training did. `chat` is the run's
    chat renderer, or None for few-shot completion prompts (base models).
    Uses whatever adapter is set on `sampler`. Prompts go to the sampler in chunks so
    all parallel slots stay busy while the progress bar still moves.
    """
    from tqdm import tqdm

    from ..methods.common import MATH_SOLVER_STOP as STUDENT_STOP, math_solver_prompt as student_prompt

    if not questions:
        raise MinisirError("evaluate: no questions (check eval.benchmark and eval.n_questions)")
    if prompt is None:
        prompt = student_prompt
        if stop is None:
            stop = STUDENT_STOP if chat is None else ()
    stop = list(stop or ())
    prompts = [prompt(q.question, chat) for q in questions]
    chunk = max(1, math.ceil(2 * getattr(sampler, "n_parallel", 8) / cfg.k))
    t0 = time.time()
    sampled: list[list] = []
    greedy: list = []
    bar = tqdm(total=len(prompts), desc=f"eval {cfg.benchmark}", unit="q", disable=not progress)
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        seed = cfg.seed * 1_000_003 + start  # distinct random streams per chunk
        # loop_repeats=0: an eval samples every answer to its end, as the cached base results were sampled,
        # whatever the run's sampler cuts in training
        sampled += sampler.generate(part, n=cfg.k, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                    top_p=cfg.top_p, seed=seed, stop=stop, loop_repeats=0)
        if cfg.greedy:
            greedy += [g[0] for g in sampler.generate(part, n=1, max_tokens=cfg.max_tokens, temperature=0.0,
                                                      seed=seed, stop=stop, loop_repeats=0)]
        bar.update(len(part))
    bar.close()
    records = []
    for i, (q, comps) in enumerate(zip(questions, sampled)):
        answers = [extract_boxed(c.text) for c in comps]
        rec = {"id": q.id, "question": q.question, "reference": q.answer,
               "answers": answers, "texts": [c.text for c in comps],
               "tokens": [len(c.token_ids) for c in comps],
               "truncated": [c.finish_reason == "length" for c in comps]}
        if cfg.greedy:
            g = greedy[i]
            rec["greedy_answer"] = extract_boxed(g.text)
            rec["greedy_text"] = g.text
        records.append(_scored(rec))
    metrics = aggregate(records)
    flat = [(a, t, tr) for r in records for a, t, tr in zip(r["answers"], r["tokens"], r["truncated"])]
    metrics.update({
        "k": cfg.k,
        "boxed_rate": sum(a is not None for a, _, _ in flat) / len(flat),
        "truncated_rate": sum(tr for _, _, tr in flat) / len(flat),
        "mean_tokens": sum(t for _, t, _ in flat) / len(flat),
        "seconds": round(time.time() - t0, 2),
    })
    config = {**cfg.model_dump(), "prompt_style": "completion" if chat is None else "chat",
              "prompt": _prompt_name(prompt), "stop": stop}
    return EvalResult(config, metrics, records, label)


def _scored(rec: dict) -> dict:
    """A record's scores from its extracted answers, by the current answer check: scoring is cheap
    and samples are not, so a cached evaluation is re-scored rather than trusted."""
    out = {**rec, **score_question(rec["answers"], rec["reference"])}
    if "greedy_answer" in rec:
        out["greedy"] = float(matches(rec["greedy_answer"], rec["reference"]))
    return out


def adapter_for_step(archive: Any, step: int) -> Path:
    """The GGUF adapter file the archive recorded for `step`."""
    for row in archive.steps():
        if row["step"] == step:
            if not row.get("adapter_path"):
                raise MinisirError(f"archive {archive.path}: step {step} has no adapter; pick a step listed by "
                                   "`minisir archive steps`")
            path = Path(row["adapter_path"])
            if not path.is_absolute():
                path = Path(archive.path).parent / path
            if not path.is_file():
                raise MinisirError(f"adapter {path} of step {step} is missing; was the run directory moved?")
            return path
    raise MinisirError(f"archive {archive.path} has no step {step} (last step {archive.last_step()})")


def run_eval(
    model_path: str | Path,
    cfg: EvalConfig,
    adapter: str | Path | None = None,
    archive: Any = None,
    step: int | None = None,
    sampler: Any = None,
    chat: Callable[[list[dict]], str] | None = None,
    progress: bool = True,
    label: str | None = None,
    prompt: PromptFn | None = None,
    stop: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> EvalResult:
    """Evaluate a GGUF (base or merged), optionally with an adapter or an archive step's adapter.

    cache_dir: reuse an identical earlier evaluation (same model and adapter bytes, settings,
    questions, prompt text and stops: the result is seeded, so it would come out the same on
    this machine). Comparing two runs against one base model then samples the base once.

    With `archive`, the result is stored via add_eval(step, benchmark, metrics incl.
    settings, seed, prompt style and prompt). `sampler` may be passed to reuse a loaded
    model. `chat`, `prompt` and `stop` are passed to evaluate(): use the run's own
    prompt style (and, when given, its method's solver prompt) so the eval measures the
    model the way it was trained to answer.
    """
    from ..sampler import Sampler

    if archive is not None and step is not None and adapter is None:
        adapter = adapter_for_step(archive, step)
    questions = load_benchmark(cfg.benchmark, cfg.n_questions, cfg.seed)
    own = sampler is None
    if own:
        sampler = Sampler(model_path, n_ctx=max(8192, 2 * cfg.max_tokens + 1024))
    try:
        if adapter is not None:
            sampler.set_adapter(adapter)
        else:
            sampler.clear_adapter()
        name = label or (f"step {step}" if step is not None else (Path(str(adapter)).stem if adapter else "base"))
        key = _cache_key(model_path, adapter, cfg, questions, chat, prompt, stop) if cache_dir else None
        result = _cached(cache_dir, key, name) if key else None
        if result is None:
            result = evaluate(sampler, questions, cfg, chat=chat, progress=progress, label=name, prompt=prompt,
                              stop=stop)
            result.config.update({"model": str(model_path), "adapter": str(adapter) if adapter else None})
            if key:
                _store(cache_dir, key, result)
    finally:
        if own:
            sampler.close()
    if archive is not None:
        archive.add_eval(step, cfg.benchmark, result.to_archive())
    return result


def eval_cache_dir() -> Path | None:
    """Where identical evaluations are reused (MINISIR_EVAL_CACHE; "off" disables)."""
    where = os.environ.get("MINISIR_EVAL_CACHE", str(Path.home() / ".cache" / "minisir" / "evals"))
    return None if where.lower() in ("", "0", "off", "none") else Path(where)


def _file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(model_path, adapter, cfg: EvalConfig, questions, chat, prompt, stop) -> str:
    """Everything that decides an evaluation's samples, hashed."""
    from importlib.metadata import version

    from ..sampler import SAMPLER_VERSION

    if prompt is None:
        from ..methods.common import math_solver_prompt as make
    else:
        make = prompt
    parts = {
        "model": _file_digest(model_path), "adapter": _file_digest(adapter) if adapter else None,
        "config": cfg.model_dump(), "questions": [(q.id, q.question, q.answer) for q in questions],
        "prompt": make(questions[0].question, chat) if questions else "", "stop": list(stop) if stop is not None else None,
        "chat": chat is not None, "llama_cpp": version("llama-cpp-python"), "sampler": SAMPLER_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cached(cache_dir: Path, key: str, label: str) -> EvalResult | None:
    path = Path(cache_dir) / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    log.info("eval %s: reusing %s", label, path)
    records = [_scored(rec) for rec in data["records"]]
    return EvalResult(data["config"], {**data["metrics"], **aggregate(records), "cached": True}, records, label)


def _store(cache_dir: Path, key: str, result: EvalResult) -> None:
    try:
        with atomic_file(Path(cache_dir) / f"{key}.json") as tmp:
            tmp.write_text(json.dumps({"config": result.config, "metrics": result.metrics, "records": result.records},
                                      default=str), encoding="utf-8")
    except OSError as exc:  # a cache that cannot be written only costs time
        log.warning("eval cache %s not written: %s", cache_dir, exc)


def save_records(result: EvalResult, path: str | Path) -> Path:
    """Full per-question records (texts included) as JSONL, for reading failures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in result.records:
            fh.write(json.dumps(rec, default=str) + "\n")
    return path
