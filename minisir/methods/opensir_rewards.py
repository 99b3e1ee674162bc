"""OpenSIR's rewards and group choice (arXiv 2511.00602; reference: EdinburghNLP/OpenSIR): the
solvability window, diversity and length terms of the teacher's reward, the student's reward, and
which GRPO groups a step trains. Pure functions of numbers: tested without a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..grpo import has_signal

if TYPE_CHECKING:
    from .opensir import OpenSIRConfig


def solvability(s: float, low: float, high: float, peak: float, edge: float = 0.0) -> float:
    """Piecewise linear: 1 at peak, `edge` at low and high, 0 outside.

    edge > 0 makes the window inclusive (reference: edge = edge_value(...)); edge = 0 gives
    nothing at the edges. Problems everyone solves teach nothing; problems nobody agrees
    on have no usable pseudo label.
    """
    if not (low < peak < high):
        raise ValueError(f"solvability: need low < peak < high, got {low}, {peak}, {high}")
    if s < low or s > high or (edge <= 0 and (s == low or s == high)):
        return 0.0
    if s <= peak:
        return edge + (1.0 - edge) * (s - low) / (peak - low)
    return edge + (1.0 - edge) * (high - s) / (high - peak)


def edge_value(low: float, high: float, n_samples: int) -> float:
    """Reference edge height: 1 / (number of solve rates k/G, k = 1..G, inside [low, high]).

    0.25 for G = 8 and the window [0.5, 0.9] (4/8 .. 7/8), 0.5 for G = 4 (2/4, 3/4).
    """
    eps = 1e-9
    reachable = [k for k in range(1, n_samples + 1) if low - eps <= k / n_samples <= high + eps]
    return 1.0 / len(reachable) if reachable else 0.0


def length_score(mean_tokens: float, cap: float) -> float:
    """min(mean student solution tokens, cap) / cap: longer solutions = harder problems."""
    if cap <= 0:
        raise ValueError("length_score: cap must be > 0")
    return float(min(max(mean_tokens, 0.0), cap) / cap)


@dataclass
class TeacherScore:
    solvability: float
    diversity: float
    length: float
    format: float
    reward: float


def teacher_reward(
    valid: bool,
    solve_rate: float,
    diversity: float,
    mean_student_tokens: float,
    cfg: OpenSIRConfig,
    n_samples: int | None = None,
    any_parsed: bool = True,
    formatted: bool = True,
) -> TeacherScore:
    """Weighted teacher reward; an invalid (or leaking) problem scores 0 on every term.

    n_samples: student samples G (sets the reference edge height); default cfg.student_samples.
    any_parsed: whether any student answer parsed (else the length term is 0 by default).
    formatted: the format check beyond parsing (the <think> block when required).
    """
    if not valid:
        return TeacherScore(0.0, 0.0, 0.0, 0.0, 0.0)
    g = n_samples or cfg.student_samples
    edge = edge_value(cfg.solve_low, cfg.solve_high, g) if cfg.solvability_edges == "reference" else 0.0
    solv = solvability(solve_rate, cfg.solve_low, cfg.solve_high, cfg.solve_peak, edge)
    div = float(min(max(diversity, 0.0), 1.0))
    length = 0.0 if (cfg.length_zero_unparsed and not any_parsed) else length_score(mean_student_tokens, cfg.length_cap)
    fmt = 1.0 if formatted else 0.0
    w = cfg.weights
    reward = w.solvability * solv + w.diversity * div + w.length * length + w.format * fmt
    return TeacherScore(solv, div, length, fmt, float(reward))


def student_reward(agrees: bool, boxed: bool, format_weight: float) -> float:
    """1 for agreeing with the majority, plus format_weight for a boxed answer."""
    return float(bool(agrees)) + format_weight * float(bool(boxed))


def select_groups(
    teacher_groups: dict[str, Sequence[float]],
    problem_rewards: dict[str, float | None],
    n_teacher: int,
    n_student: int,
    student_rewards: dict[str, Sequence[float]] | None = None,
    teacher_floor: float = 0.0,
    student_floor: float = 0.0,
) -> tuple[list[str], list[str]]:
    """Pick which GRPO groups to train this step.

    teacher_groups: group id (one per reference) -> teacher rewards of its samples.
        The n_teacher groups with the highest reward variance win (most signal);
        groups whose reward std is below teacher_floor are never picked (noise, not signal).
    problem_rewards: problem key -> teacher reward, None for invalid problems.
        The student groups of the n_student best valid problems win. When
        student_rewards (problem key -> student rewards) is given, problems whose
        students' rewards spread less than student_floor are skipped: they carry no gradient.
    Ties keep insertion order. Returns (teacher group ids, problem keys).
    """
    variances = [
        (float(np.var(np.asarray(r, dtype=np.float64))) if len(r) > 1 else 0.0, i, gid)
        for i, (gid, r) in enumerate(teacher_groups.items())
    ]
    variances = [v for v, (_, r) in zip(variances, teacher_groups.items()) if has_signal(list(r), teacher_floor)]
    variances.sort(key=lambda v: (-v[0], v[1]))
    chosen_teacher = [gid for _, _, gid in variances[: max(n_teacher, 0)]]
    ranked = [
        (float(r), i, key) for i, (key, r) in enumerate(problem_rewards.items()) if r is not None
    ]
    if student_rewards is not None:
        ranked = [v for v in ranked if has_signal(list(student_rewards.get(v[2], ())), student_floor)]
    ranked.sort(key=lambda v: (-v[0], v[1]))
    chosen_student = [key for _, _, key in ranked[: max(n_student, 0)]]
    return chosen_teacher, chosen_student
