"""The benchmarks `--benchmark` accepts, by name, and user JSONL files: load_benchmark.

Self-play training has no labels, so these offline benchmarks are the only way to see
whether a run made the model better: GSM8K-100 (the original questions), GSM-Symbolic
(fresh seeded variants of the same templates), generated arithmetic, or a user's JSONL file.
To add a benchmark: name it in BENCHMARKS and load it in load_benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MinisirError
from .arithmetic import ARITHMETIC_LEVELS, load_arithmetic
from .gsm import load_gsm8k, load_gsm_symbolic
from .questions import Question, _subset, reference_answer

BENCHMARKS = ("gsm8k-100", "gsm-symbolic", "arithmetic", "arithmetic-easy", "arithmetic-medium", "arithmetic-hard")


def load_jsonl(path: str | Path, n: int | None = None, seed: int = 0) -> list[Question]:
    """User questions: one JSON object per line with "question" and "answer" (id optional).

    Every other field ("kind", "category", "level", ...) is kept in the question's meta: a "kind" or
    "category" gives `minisir eval --compare` its per-kind table."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MinisirError(f"benchmark file {path} does not exist; pass {', '.join(BENCHMARKS)} or a JSONL file")
    out: list[Question] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MinisirError(f"{path} line {lineno}: not valid JSON ({exc.msg}); one object per line") from exc
            if not isinstance(row, dict):
                raise MinisirError(f"{path} line {lineno}: expected a JSON object with question and answer")
            q, a = row.get("question"), row.get("answer")
            if not isinstance(q, str) or not q.strip():
                raise MinisirError(f"{path} line {lineno}: field 'question' missing or not a non-empty string")
            if a is None or isinstance(a, (dict, list, bool)) or not reference_answer(a):
                raise MinisirError(f"{path} line {lineno}: field 'answer' missing or empty (use a number or text)")
            meta = {k: v for k, v in row.items() if k not in ("id", "question", "answer")}
            out.append(Question(str(row.get("id", f"{path.stem}-{lineno}")), q.strip(), reference_answer(a), meta))
    if not out:
        raise MinisirError(f"benchmark file {path} has no questions")
    return _subset(out, n, seed)


def load_benchmark(name_or_path: str | Path, n: int | None = None, seed: int = 0) -> list[Question]:
    """Questions of a named benchmark or JSONL file; n picks a seeded subset / count."""
    name = str(name_or_path)
    if name == "gsm8k-100":
        return load_gsm8k(n, seed)
    if name == "gsm-symbolic":
        return load_gsm_symbolic(n, seed)[0]
    if name == "arithmetic":  # the original three-digit set, kept for old archives
        return load_arithmetic(n, seed, "hard")
    if name.startswith("arithmetic-") and name.removeprefix("arithmetic-") in ARITHMETIC_LEVELS:
        return load_arithmetic(n, seed, name.removeprefix("arithmetic-"))
    if name.endswith(".jsonl") or Path(name).expanduser().exists():
        return load_jsonl(name, n, seed)
    raise MinisirError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)} or a .jsonl file")
