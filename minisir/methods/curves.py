"""The report's per-step curves: the step metrics every method stores (the step contract's), each with
a fallback query over the archive's tables for runs that predate the metric. A method adds its own
curves and panels in its module (`CURVES`, `PANELS`), so `report.py` names no method's metric."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Curve:
    key: str  # step-metrics key the loop stores
    label: str  # legend label
    sql: str  # fallback: (step, value) rows from the tables


# Fallback queries skip seed problems: they are not the teacher's output.
NOT_SEED = "COALESCE(role, '') != 'seed'"
CURVES: dict[str, Curve] = {
    "teacher_reward_mean": Curve("teacher_reward_mean", "teacher reward (mean per problem)",
                                 f"SELECT step, AVG(teacher_reward) FROM problems WHERE teacher_reward IS NOT NULL "
                                 f"AND {NOT_SEED} GROUP BY step"),
    "student_reward_mean": Curve("student_reward_mean", "student reward (mean per solution)",
                                 "SELECT step, AVG(reward) FROM solutions WHERE reward IS NOT NULL GROUP BY step"),
    "solve_rate_mean": Curve("solve_rate_mean", "solve rate (majority share, valid problems)",
                             f"SELECT step, AVG(solve_rate) FROM problems WHERE valid = 1 AND solve_rate IS NOT NULL "
                             f"AND {NOT_SEED} GROUP BY step"),
    "valid_rate": Curve("valid_rate", "valid-problem rate",
                        f"SELECT step, AVG(valid) FROM problems WHERE {NOT_SEED} GROUP BY step"),
    "label_precision": Curve("label_precision", "majority vote equals the executed answer",
                             "SELECT step, AVG(majority_correct) FROM problems "
                             "WHERE majority_correct IS NOT NULL GROUP BY step"),
    "solution_tokens_mean": Curve("solution_tokens_mean", "solution length (mean tokens)",
                                  "SELECT step, AVG(n_tokens) FROM solutions WHERE n_tokens IS NOT NULL GROUP BY step"),
}

# One PNG per panel: (file, title, y label, curves, y range or None)
PANELS = (
    ("rewards.png", "Teacher and student reward", "mean reward", ("teacher_reward_mean", "student_reward_mean"), None),
    ("solve_rate.png", "Student solve rate", "fraction of samples agreeing with the majority",
     ("solve_rate_mean",), (0, 1.02)),
    ("valid_rate.png", "Valid-problem rate", "fraction of teacher outputs that parse", ("valid_rate",), (0, 1.02)),
    ("label_audit.png", "Label audit", "share of audited problems whose majority vote is right",
     ("label_precision",), (0, 1.02)),
    ("solution_length.png", "Student solution length", "tokens per solution", ("solution_tokens_mean",), None),
)


def report_curves(method: str | None) -> tuple[dict[str, Curve], tuple[Any, ...]]:
    """The common curves and panels, then the run's method's own (an unknown method adds none)."""
    from . import method_module

    try:
        module = method_module(method) if method else None
    except (ImportError, ValueError):
        module = None
    return ({**CURVES, **getattr(module, "CURVES", {})}, (*PANELS, *getattr(module, "PANELS", ())))
