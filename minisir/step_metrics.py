"""A step's metrics: its rounds merged by the method's rules, the sampler's share of the step, and
the one line a step prints."""

from __future__ import annotations

from typing import Any

import numpy as np

from .methods.common import StepResult


def sampler_counters(sampler: Any) -> dict[str, float]:
    """The in-process sampler's running totals (a server sampler has none)."""
    timings = getattr(sampler, "timings", None)
    if not isinstance(timings, dict):
        return {}
    return {**timings, "decode_calls": float(getattr(sampler, "decode_calls", 0)),
            "decode_rows": float(getattr(sampler, "decode_rows", 0)),
            "loops_stopped": float(getattr(sampler, "loops_stopped", 0))}


def sampler_split(before: dict[str, float], after: dict[str, float], n_parallel: int) -> dict[str, float]:
    """Where one step's sampling time went: seconds in prompt decodes, generation decodes and numpy
    sampling, and the generation batch's mean occupancy (sequences per decode call over n_parallel).
    These explain a loop rate below `bench sampler`'s batched one: a half-empty batch, or prompts."""
    if not before or not after:
        return {}
    out = {f"sampler_{k}": round(after[k] - before[k], 3) for k in ("prompt_s", "decode_s", "sample_s")}
    if "loops_stopped" in after:  # a sampler that stops loops counts them
        out["loop_stops"] = after["loops_stopped"] - before.get("loops_stopped", 0.0)
    calls = after["decode_calls"] - before["decode_calls"]
    if calls and n_parallel:
        out["decode_occupancy"] = round((after["decode_rows"] - before["decode_rows"]) / (calls * n_parallel), 4)
    return out


def _weighted_mean(rounds: list[StepResult], key: str, count: str) -> float | None:
    """`key` over all rounds, each round weighted by its `count` (rounds without a value left out)."""
    pairs = [(r.metrics.get(count) or 0, r.metrics.get(key)) for r in rounds]
    total = sum(n for n, v in pairs if v is not None)
    return sum(n * v for n, v in pairs if v is not None) / total if total else None


def merge_rounds(rounds: list[StepResult], rules: dict[str, str] | None = None) -> StepResult:
    """One step's result from its sampling rounds: rows and samples pooled (one optimizer step
    accumulates all of them), each metric combined as the method declares (`rules`, its module's
    METRICS: "sum", or "mean/COUNT" weighted by COUNT), else averaged over rounds."""
    if len(rounds) == 1:
        return rounds[0]
    rules = rules or {}
    metrics: dict[str, Any] = {}
    for key in rounds[0].metrics:
        values = [r.metrics.get(key) for r in rounds]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        rule = rules.get(key, "mean")
        if not numbers or len(numbers) < len([v for v in values if v is not None]):
            metrics[key] = values[0]
        elif rule == "sum":
            metrics[key] = sum(numbers)
        elif rule.startswith("mean/"):
            metrics[key] = _weighted_mean(rounds, key, rule.removeprefix("mean/"))
        else:
            metrics[key] = float(np.mean(numbers))
    metrics["rounds"] = len(rounds)
    return StepResult([p for r in rounds for p in r.problems], [s for r in rounds for s in r.solutions],
                      [s for r in rounds for s in r.samples], metrics)


def pool_progress(m: dict[str, Any]) -> str:
    """A phase-0 step's progress: problems admitted to the pool against the target, and teacher
    samples spent against the budget, with a plain word when the budget ran out first."""
    admitted = int(m.get("pool_admitted_before", 0) + m.get("admitted", 0))
    spent = int(m.get("pool_samples_before", 0) + m.get("teacher_samples", 0))
    target, budget = int(m["pool_target"]), int(m.get("pool_budget", 0))
    text = f"{admitted}/{target} admitted, {spent}/{budget} samples"
    if admitted < target and budget and spent >= budget:
        text += f"; budget spent, RL starts from a pool of {admitted}"
    return text


def summary_line(step: int, m: dict[str, Any]) -> str:
    """One human line per step."""

    def f(key: str, fmt: str = "{:.2f}") -> str:
        value = m.get(key)
        return "-" if value is None else fmt.format(value)

    tag = " [pool]" if m.get("phase") == "pool" else ""
    if m.get("phase") == "pool" and m.get("pool_target"):
        tag = f" [pool {pool_progress(m)}]"
    return (
        f"step {step}{tag}: teacher {f('teacher_reward_mean')} student {f('student_reward_mean')} "
        f"solve {f('solve_rate_mean')} valid {f('valid_rate')} "
        + (f"labelled {f('labelled_rate')} " if m.get("labelled_rate") is not None else "")
        + (f"copies {f('copy_rate')} " if m.get("copy_rate") else "")
        + f"div {f('diversity_mean')} "
        f"sol_tok {f('solution_tokens_mean', '{:.0f}')} trained {f('train_samples', '{:.0f}')} "
        f"loss {f('train_loss', '{:.4f}')} "
        f"gap {f('train_logprob_gap', '{:.3f}')} sync {f('sync_scale')} {f('seconds_step', '{:.0f}')}s"
        + (f" vote right {f('label_precision')} of {m['label_audited']}" if m.get("label_audited") else "")
    )



