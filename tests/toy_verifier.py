"""A user's own checker for a toy topic whose answers are chemical formulas (method.verifier):
two formulas agree when they hold the same atoms, in any order ("H2O" is "OH2")."""

from __future__ import annotations

import re
from collections import Counter


def atoms(formula: str) -> Counter:
    out: Counter = Counter()
    for element, count in re.findall(r"([A-Z][a-z]?)(\d*)", formula.replace(" ", "")):
        out[element] += int(count or 1)
    return out


def same_formula(problem: str, label: str, answer: str) -> bool:
    return bool(atoms(label)) and atoms(label) == atoms(answer)


def broken(problem: str, label: str, answer: str) -> bool:
    raise KeyError("element table missing")
