"""Executed labels: bare expressions, proposer programs (exact or sandboxed), refusals and the audit."""

from __future__ import annotations

import pytest

from minisir.labels import audit, bare_expression, exact_value, execute
from minisir.sandbox import SandboxConfig


@pytest.mark.parametrize("problem, expr", [
    ("What is 47 + 38?", "47 + 38"),
    ("Compute 736 - 148 * 3.", "736 - 148 * 3"),
    ("what's 12 x 4?", "12 * 4"),
    ("Calculate (3 + 4) × 2", "(3 + 4) * 2"),
    ("84 ÷ 7 = ?", "84 / 7"),
    ("Tom has 35 marbles and gives 12 away. How many are left?", None),
    ("What is 47?", None),  # no operator: nothing to compute
    ("What is x + 3?", None),
])
def test_bare_expression(problem, expr):
    assert bare_expression(problem) == expr


@pytest.mark.parametrize("expr, value", [
    ("27 * 8", "216"), ("736 - 148 * 3", "292"), ("7 / 2", "3.5"), ("1 / 3", "1/3"),
    ("(3 + 4) * 2", "14"), ("5 / 0", None), ("2 ** 2000", None),
])
def test_exact_value(expr, value):
    assert exact_value(expr) == value


def test_execute_uses_the_problem_or_the_program():
    problems = ["What is 27 * 8?", "Tom has 35 marbles and gives 12 away. How many are left?",
                "Tom has 35 marbles and gives 12 away. How many are left?", "A word problem with no program."]
    programs = [None, "print(35 - 12)", "left = 35 - 12\nprint(f'{left}')", None]
    out = execute(problems, programs)
    assert [(e.answer, e.source) for e in out] == [("216", "expression"), ("23", "program"), ("23", "program"),
                                                    (None, None)]
    assert "not a bare expression" in out[3].reason


def test_a_given_program_wins_over_the_problem_text():
    (e,) = execute(["What is 2 + 2?"], ["print(2 + 3)"])
    assert (e.answer, e.source) == ("5", "program")


def test_failing_programs_are_refused_with_their_reason():
    cfg = SandboxConfig(timeout_s=1.0)
    out = execute(["p"] * 4, ["print(1 / 0)", "while True:\n    pass", "print('no digits')", "import os\nx = 1"],
                  cfg)
    assert all(e.answer is None for e in out)
    assert "ZeroDivisionError" in out[0].reason
    assert "timeout" in out[1].reason
    assert out[2].reason == "program printed no number"
    assert out[3].reason == "program printed no number"


def test_audit_compares_by_value():
    assert audit("216", "216.0") is True
    assert audit("164", "216") is False
    assert audit(None, "216") is None and audit("216", None) is None
