"""Bad recipes through the real CLI: exit 2, ONE stderr line naming the field, no traceback.

Every case must be refused before a model loads: `minisir.loop.Sampler` is replaced by a
tripwire that fails the test if it is ever constructed, and each case is timed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner

from minisir.cli import main
from tiny_run import TINY

def _set(dotted: str, value: Any) -> Callable[[dict], None]:
    def edit(recipe: dict) -> None:
        node = recipe
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return edit


def _drop(dotted: str) -> Callable[[dict], None]:
    def edit(recipe: dict) -> None:
        node = recipe
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        del node[leaf]
    return edit


# id, recipe edit (None = TINY) or raw file text (str) or bytes, --set values, substrings the line must hold
CASES: list[tuple[str, Any, list[str], list[str]]] = [
    ("unknown-top-key", _set("extras", {"a": 1}), [], ["extras", "unknown key"]),
    ("unknown-method-key", _set("method.teacher_sample", 4), [], ["method.teacher_sample", "unknown key"]),
    ("unknown-run-key", _set("run.step", 3), [], ["run.step", "unknown key"]),
    ("unknown-nested-key", _set("method.weights.novelty", 1.0), [], ["method.weights.novelty", "unknown key"]),
    ("steps-wrong-type", _set("run.steps", "many"), [], ["run.steps", "integer"]),
    ("n-ctx-list", _set("sampler.n_ctx", [1, 2]), [], ["sampler.n_ctx", "integer"]),
    ("section-not-mapping", _set("model", "bundled"), [], ["model"]),
    ("section-null", _set("trainer", None), [], ["trainer"]),
    ("steps-zero", _set("run.steps", 0), [], ["run.steps", "greater than or equal to 1"]),
    ("seed-negative", _set("run.seed", -1), [], ["run.seed", "greater than or equal to 0"]),
    ("n-parallel-zero", _set("sampler.n_parallel", 0), [], ["sampler.n_parallel", "greater than or equal"]),
    ("n-ctx-tiny", _set("sampler.n_ctx", 16), [], ["sampler.n_ctx", "256"]),
    ("temperature-zero", _set("method.temperature", 0), [], ["method.temperature", "greater than 0"]),
    ("teacher-samples-one", _set("method.teacher_samples", 1), [], ["method.teacher_samples", "2"]),
    ("lr-negative", _set("trainer.learning_rate", -1e-5), [], ["trainer.learning_rate", "greater than 0"]),
    ("dropout-one", _set("trainer.lora_dropout", 1.0), [], ["trainer.lora_dropout", "less than 1"]),
    ("target-modules-empty", _set("trainer.target_modules", []), [], ["trainer.target_modules", "at least 1"]),
    ("prompt-style", _set("model.prompt_style", "fancy"), [], ["model.prompt_style", "'chat'"]),
    ("seeds-empty", _set("method.seeds", []), [], ["method.seeds", "at least 1"]),
    ("unknown-method", _set("method.name", "grpo"), [], ["method", "use name: opensir, sqlm, rlvr"]),
    ("method-without-name", _drop("method.name"), [], ["method.name", "opensir, sqlm, rlvr"]),
    ("solve-window-low-gt-high", _set("method.solve_low", 0.95), [], ["method", "solve_low", "solve_high"]),
    ("loop-repeats-one", _set("sampler.loop_repeats", 1), [], ["sampler", "loop_repeats", "at least 2"]),
    ("teacher-example-without-program",
     {"method": {"name": "opensir", "labels": "program", "teacher_format": "fenced", "teacher_examples": [
         {"reference": "What is 1+1?", "problem": "What is 6 * 7?"}]}}, [],
     ["method", "teacher_examples[0]", "program", "labels: program"]),
    ("teacher-example-without-concepts",
     {"method": {"name": "opensir", "teacher_examples": [{"reference": "What is 1+1?", "problem": "What is 6 * 7?"}]}},
     [], ["method", "teacher_examples[0]", "concepts", "tags"]),
    ("teacher-example-shorter-than-the-leak-filter",
     {"method": {"name": "opensir", "labels": "program", "teacher_format": "fenced", "teacher_examples": [
         {"reference": "What is 1+1?", "problem": "What is 6 * 7?", "program": "print(6 * 7)"}]}}, [],
     ["method", "teacher_examples[0].problem is 14 characters", "min_problem_chars (30)"]),
    ("sqlm-band-high", {"method": {"name": "sqlm", "solver_samples": 4, "band_high": 9}}, [],
     ["method", "band_high", "solver_samples"]),
    ("sqlm-pass-window", {"method": {"name": "sqlm", "pass_low": 0.9, "pass_high": 0.5}}, [],
     ["method", "pass_low", "pass_high"]),
    ("sqlm-topic", {"method": {"name": "sqlm", "topic": "poetry"}}, [], ["method", "poetry", "answer_kind"]),
    ("model-file-missing", _set("model.gguf", "/nonexistent.gguf"), [], ["model.gguf", "/nonexistent.gguf", "bundled"]),
    ("model-file-not-gguf", "NOT_GGUF", [], ["model.gguf", "not a GGUF"]),
    ("hf-dir-missing", _set("model.hf_dir", "/nonexistent-hf"), [], ["model.hf_dir", "config.json"]),
    ("run-dir-under-proc", _set("run.dir", "/proc/x/run"), [], ["run.dir", "/proc/x"]),
    ("run-dir-under-file", "RUN_DIR_UNDER_FILE", [], ["run.dir", "not a writable directory"]),
    ("bad-yaml", "model:\n  gguf: [bundled\nrun: {steps: 2\n", [], ["not valid YAML", "line"]),
    ("not-a-mapping", "- model\n- run\n", [], ["YAML mapping", "list"]),
    ("scalar-recipe", "just a string\n", [], ["YAML mapping", "str"]),
    ("not-utf8", b"model:\n  gguf: \xff\xfe bundled\n", [], ["not valid YAML"]),
    ("recipe-missing", "MISSING", [], ["recipe file not found", "recipes/quickstart.yaml"]),
    ("set-bad-value", None, ["run.steps=abc"], ["run.steps", "integer"]),
    ("set-out-of-range", None, ["method.solve_high=1.5"], ["method.solve_high", "less than or equal to 1"]),
    ("set-unknown-key", None, ["trainer.lora_rnk=8"], ["trainer.lora_rnk", "unknown key"]),
    ("set-no-equals", None, ["run.steps"], ["--set run.steps", "KEY=VALUE"]),
    ("set-into-scalar", None, ["run.steps.max=3"], ["--set run.steps.max", "not a section", "key path"]),
    ("set-unknown-method", None, ["method.name=grpo"], ["method", "opensir"]),
]


def _write_case(tmp_path: Path, spec: Any) -> Path:
    run_dir = tmp_path / "run"
    recipe_path = tmp_path / "recipe.yaml"
    if isinstance(spec, bytes):
        recipe_path.write_bytes(spec)
        return recipe_path
    if spec == "MISSING":
        return tmp_path / "no-such-recipe.yaml"
    if isinstance(spec, str) and spec not in ("NOT_GGUF", "RUN_DIR_UNDER_FILE"):
        recipe_path.write_text(spec)
        return recipe_path
    recipe = copy.deepcopy(TINY)
    recipe["run"]["dir"] = str(run_dir)
    if spec == "NOT_GGUF":
        fake = tmp_path / "model.gguf"
        fake.write_bytes(b"PK\x03\x04 not a gguf at all")
        recipe["model"]["gguf"] = str(fake)
    elif spec == "RUN_DIR_UNDER_FILE":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        recipe["run"]["dir"] = str(blocker / "run")
    elif isinstance(spec, dict):
        recipe.update(copy.deepcopy(spec))
    elif spec is not None:
        spec(recipe)
    recipe_path.write_text(yaml.safe_dump(recipe))
    return recipe_path


@pytest.mark.parametrize("case_id, spec, sets, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_recipe_refused(tmp_path, no_model_loading, case_id, spec, sets, expected):
    recipe_path = _write_case(tmp_path, spec)
    args = ["run", str(recipe_path)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: ")
    for part in expected:
        assert part in line, (part, line)
    # A refused run leaves no run directory behind (nothing was created for it).
    assert not (tmp_path / "run").exists()


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case_id", ["model-file-missing", "bad-yaml"])
def test_refused_by_real_process(tmp_path, case_id):
    """The installed entry point behaves the same in a real process (no CliRunner)."""
    spec = dict((c[0], c[1]) for c in CASES)[case_id]
    recipe_path = _write_case(tmp_path, spec)
    proc = subprocess.run([sys.executable, "-m", "minisir.cli", "run", str(recipe_path)],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
