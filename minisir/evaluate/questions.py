"""What every benchmark is made of: a Question with its reference answer, and the check.

Answers are checked with the training code (answers.extract_boxed + matches), so an
eval measures exactly what the reward sees. The sources of questions (gsm.py,
arithmetic.py, user JSONL in benchmarks.py) all build Question records from here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..answers import extract_boxed, matches, normalize_answer


@dataclass
class Question:
    id: str
    question: str
    answer: str  # reference answer, already reduced to the final value ("1200")
    meta: dict = field(default_factory=dict)


def reference_answer(raw: Any) -> str:
    """Final value of a ground-truth answer: GSM8K "...#### 1,200", \\boxed{..}, or a plain value."""
    text = str(raw).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    else:
        boxed = extract_boxed(text)
        if boxed is not None:
            text = boxed
    text = normalize_answer(text)
    return text


def is_correct(completion: str, reference: str) -> bool:
    """The training check: last \\boxed{} answer giving the reference's value (answers.matches)."""
    return matches(extract_boxed(completion), reference)


def _subset(items: list, n: int | None, seed: int) -> list:
    """n items chosen by a seeded shuffle, kept in their original order (stable ids)."""
    if n is None or n >= len(items):
        return list(items)
    idx = sorted(random.Random(f"subset:{seed}").sample(range(len(items)), n))
    return [items[i] for i in idx]
