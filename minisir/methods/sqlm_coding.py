"""SQLM's coding topic: solver programs run against the proposer's tests in the sandbox.

A solver sample earns its pass rate; the proposer earns 1 when the mean pass rate over its
solvers lies strictly inside (pass_low, pass_high), by default (0, 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..sandbox import TestCase, passed, run_batch

if TYPE_CHECKING:
    from .sqlm import SQLMConfig


_PY_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.S | re.I)


_ANY_FENCE = re.compile(r"```[^\n`]*\r?\n(.*?)```", re.S)


def extract_code(text: str) -> str | None:
    """The program in a solver completion.


    1. the last complete ```python block, when the text has one;
    2. else, when the text contains ```: the text before it (the prompt opened the fence
       and the model closed it) or, if nothing precedes it, the first complete block;
    3. else the whole text (the prompt opened the fence and the stop string closed it).
    None when nothing but whitespace remains.
    """
    if not isinstance(text, str):
        return None
    tagged = _PY_FENCE.findall(text)
    if tagged:
        code = tagged[-1]
    elif "```" in text:
        head = text[: text.index("```")]
        if head.strip():
            code = head
        else:
            block = _ANY_FENCE.search(text)
            code = block.group(1) if block else text[text.index("```") + 3 :].partition("\n")[2]
    else:
        code = text
    return code.strip("\n") if code.strip() else None


def code_solver_reward(passed: Sequence[bool]) -> float:
    """Share of the proposer's tests the program passed (0 with no tests)."""
    return sum(1 for p in passed if p) / len(passed) if passed else 0.0


def code_proposer_reward(rates: Sequence[float], low: float = 0.0, high: float = 1.0) -> float:
    """1 when the mean pass rate over solver samples is strictly inside (low, high)."""
    if not rates:
        return 0.0
    mean = sum(rates) / len(rates)
    return 1.0 if low < mean < high else 0.0


@dataclass
class CodeScore:
    codes: list[str | None]
    passed: list[list[bool]]  # per solution, per test
    pass_rates: list[float]
    solver_rewards: list[float]
    proposer_reward: float


def score_code_batch(items: Sequence[tuple[Sequence[str], Sequence[TestCase]]], cfg: SQLMConfig) -> list[CodeScore]:
    """Score many coding problems at once: every (program, test) run shares one sandbox pool.


    items: per problem, (the N solver completions, the proposer's tests).
    """
    codes_per = [[extract_code(s) for s in sols] for sols, _ in items]
    jobs = [(c, t.stdin) for codes, (_, tests) in zip(codes_per, items) for c in codes if c is not None for t in tests]
    results = iter(run_batch(jobs, cfg.sandbox))
    scores = []
    for codes, (_, tests) in zip(codes_per, items):
        table = [[passed(next(results), t) for t in tests] if c is not None else [False] * len(tests) for c in codes]
        rates = [code_solver_reward(row) for row in table]
        scores.append(
            CodeScore(
                codes=codes,
                passed=table,
                pass_rates=rates,
                solver_rewards=list(rates),
                proposer_reward=code_proposer_reward(rates, cfg.pass_low, cfg.pass_high),
            )
        )
    return scores


def score_code(solutions: Sequence[str], tests: Sequence[TestCase], cfg: SQLMConfig) -> CodeScore:
    """Run the N solutions of one coding problem against its tests (sandboxed)."""
    return score_code_batch([(solutions, tests)], cfg)[0]
