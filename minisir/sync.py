"""Is llama.cpp sampling with the adapter the trainer holds? Which adapter scale it matches.

Both engines score the same probe texts: llama.cpp as it stands, and the trainer with its LoRA
at the scale the sampler should use (`expected`, the recipe's sampler.adapter_scale) and at the
alternatives a fault would give: none (0), half and double. Per token, the absolute log-prob
error against each hypothesis says which one llama.cpp matches. In sync, it matches `expected`
best. A missing, half-loaded, mis-scaled or other run's adapter matches another scale better,
and a paired test on the per-token errors says whether the probe measured that beyond the
engines' own numeric disagreement (quantised activations, bf16).

A second test fits the slope of llama.cpp's change from the base on the trainer's change (the
adapter scale it shows, `scale`): exact near 1, where a half-loaded adapter sits (0.64 +- 0.03,
between the hypotheses), but log-probs saturate further out (a doubled adapter of a trained run
showed 1.54 +- 0.13), which is where the hypotheses take over.

Why not one gap: the first guard compared the mean gap with a limit; that gap grows with the
engines' noise as the model sharpens, on texts it finds unlikely, and it stopped a healthy run
at step 18 (issue 27). Both tests here compare the engines token by token, so that noise widens
their errors instead of moving them. README, "Sync guard", has the calibration.

Torch-free: the numbers come in as arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A probe text from a sampled completion keeps BOS and the prompt's last PROMPT_TAIL tokens (the
# few-shot head adds cost, not signal) and at most COMPLETION_MAX completion tokens.
PROMPT_TAIL = 48
COMPLETION_MAX = 96
# The adapter scales a check compares, as multiples of the expected one (1 = in sync).
HYPOTHESES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
# The gap test's floor in nats/token (gap_limit): 2.5x the bundled Q4_K_M model's no-adapter gap.
GAP_MIN = 0.1


def probe_text(prompt_ids: list[int], completion_ids: list[int]) -> tuple[list[int], list[int]]:
    """A short (prompt, completion) pair both engines can score cheaply, cut from a sampled one."""
    prompt = list(prompt_ids)
    if len(prompt) > PROMPT_TAIL + 1:
        prompt = prompt[:1] + prompt[-PROMPT_TAIL:]
    return prompt, list(completion_ids[:COMPLETION_MAX])


@dataclass(frozen=True)
class SyncReading:
    """One check's numbers (per probe token)."""

    tokens: int
    errors: dict[float, float]  # hypothesis (multiple of the expected scale) -> mean |sampler - trainer|
    best: float  # the hypothesis llama.cpp matches best
    z: float  # how far (paired z) it matches `best` better than 1; 0 when best is 1
    effect: float  # rms of the adapter's effect on the probe (trainer at 1 vs base)
    scale: float = math.nan  # least-squares slope of llama.cpp's change on the trainer's (diagnostic)
    scale_se: float = math.inf
    own_gap: float = math.nan  # the gap on the run's own completions only (no fixed text): a third test's candidate

    @property
    def gap(self) -> float:
        """Mean |sampler - trainer| at the expected scale: the first guard's figure."""
        return self.errors[1.0]

    def metrics(self) -> dict[str, float]:
        """The step metrics a run stores (sync_*)."""
        out = {"sync_gap": round(self.gap, 5), "sync_effect": round(self.effect, 5), "sync_tokens": float(self.tokens),
               "sync_match": self.best, "sync_z": round(self.z, 3)}
        if math.isfinite(self.scale):
            out.update(sync_scale=round(self.scale, 4), sync_scale_se=round(self.scale_se, 4))
        if math.isfinite(self.own_gap):
            out["sync_gap_own"] = round(self.own_gap, 5)
        return out


def slope(sampler_lp: np.ndarray, lora_lp: np.ndarray, base_lp: np.ndarray) -> tuple[float, float]:
    """(slope, standard error) of llama.cpp's change from the base on the trainer's, through the origin."""
    effect, seen = lora_lp - base_lp, sampler_lp - base_lp
    ss = float(effect @ effect)
    if ss == 0.0:
        return math.nan, math.inf
    k = float(effect @ seen) / ss
    resid = seen - k * effect
    return k, math.sqrt(float(resid @ resid) / max(effect.size - 1, 1) / ss)


def read(sampler_lp, trainer_lp: dict[float, np.ndarray], own_from: int | None = None) -> SyncReading:
    """Compare llama.cpp's log-probs with the trainer's under each hypothesis (HYPOTHESES keys).

    own_from: where the run's own completions start in the arrays (after the fixed text), for own_gap.
    """
    s = np.asarray(sampler_lp, dtype=np.float64).reshape(-1)
    t = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in trainer_lp.items()}
    if s.size == 0 or any(v.shape != s.shape for v in t.values()) or set(t) != set(HYPOTHESES):
        raise ValueError(f"sync.read needs non-empty equal arrays for the hypotheses {HYPOTHESES}")
    err = {k: np.abs(s - v) for k, v in t.items()}
    errors = {k: float(e.mean()) for k, e in err.items()}
    best = min(HYPOTHESES, key=lambda k: (errors[k], k != 1.0))
    z = 0.0
    if best != 1.0:
        diff = err[1.0] - err[best]
        sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
        z = math.inf if sd == 0.0 else float(diff.mean()) / (sd / math.sqrt(diff.size))
    effect = float(np.sqrt(np.mean((t[1.0] - t[0.0]) ** 2)))
    k, se = slope(s, t[1.0], t[0.0])
    own = err[1.0][own_from:] if own_from is not None else np.empty(0)
    return SyncReading(s.size, errors, best, z, effect, k, se, float(own.mean()) if own.size else math.nan)


def gross(reading: SyncReading, confidence: float = 3.0, noise: float = 0.0) -> bool:
    """Whether the hypotheses test calls the reading: llama.cpp matches none, half or double scale
    better than the expected one by a paired z of `confidence` (a missing or mis-scaled adapter),
    for an adapter whose effect reaches the engines' no-adapter gap `noise` (see verdict).
    A call by the slope alone is a milder fault, and the probe's own noise reached a statistic of
    0.147 against the 0.2 tolerance on a healthy run (RESULTS.md), so the loop wants it twice."""
    return reading.effect >= noise and reading.best != 1.0 and reading.z >= confidence


def gap_limit(floor: float, ratio: float | None) -> float | None:
    """The largest own-completion gap a healthy check may show: `ratio` times the engines'
    no-adapter gap, and never below GAP_MIN (engines that agree closely, as on a GPU, still differ
    by more than nothing once an adapter acts). None when the gap test is off."""
    return None if ratio is None else max(ratio * floor, GAP_MIN)


def verdict(reading: SyncReading, expected: float, tolerance: float, confidence: float = 3.0,
            max_gap: float | None = None, noise: float = 0.0) -> str | None:
    """None when llama.cpp is in sync with the trainer (or the probe cannot tell), else one clause
    saying what it matches instead. Three tests, any of which calls a fault:

    - near 1, the slope: further than `tolerance` from 1 by more than `confidence` standard errors
      (a half-loaded adapter shows 0.64 +- 0.03);
    - far from 1, where log-probs saturate and the slope understates the fault: another
      hypothesis (none, half, double) beats the expected scale by a paired z of `confidence`;
    - the gap on the run's own completions (`own_gap`) above `max_gap` (gap_limit): another run's
      trained adapter, which acts at about the expected scale but elsewhere, shows here (0.22
      nats/token against a healthy 0.03, with the engines' no-adapter gap at 0.04).

    `noise` is the engines' own disagreement with no adapter (SyncGuard.floor, about 0.04
    nats/token on the bundled model). While the adapter moves the probe less than that (rms
    `effect`), the slope and the hypotheses compare noise with noise, and no fault can matter much
    yet either, so neither test calls anything. Their standard errors treat tokens as independent,
    which the engines' rounding errors are not: an adapter that had barely trained (effect 0.0075
    against a 0.048 gap, 20 probe tokens) read a slope of -6.25 +- 1.76 and stopped a healthy run
    (tests/test_crash_resume.py). Healthy runs of the shipped recipes show effects of 0.1 to 0.9
    from their first check (RESULTS.md), so the gate costs them nothing.
    """
    if gross(reading, confidence, noise):
        what = "no adapter" if reading.best == 0.0 else f"the adapter at {reading.best * expected:g}x"
        return (f"llama.cpp's log-probs match the trainer with {what} (mean error "
                f"{reading.errors[reading.best]:.3f} nats/token) better than with its adapter at {expected:g}x "
                f"({reading.gap:.3f}; z {reading.z:.1f})")
    if (reading.effect >= noise and math.isfinite(reading.scale)
            and abs(reading.scale - 1.0) - tolerance > confidence * reading.scale_se):
        return (f"the sampler's adapter acts at {reading.scale:.2f} +- {reading.scale_se:.2f} of the trainer's "
                f"(tolerance {tolerance:g})")
    if max_gap is not None and math.isfinite(reading.own_gap) and reading.own_gap > max_gap:
        return (f"llama.cpp and the trainer disagree by {reading.own_gap:.3f} nats/token on the run's own "
                f"completions (limit {max_gap:.3f}: trainer.sync_gap_ratio times their no-adapter gap)")
    return None
