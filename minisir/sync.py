"""Is llama.cpp sampling with the adapter the trainer holds? A fitted-scale check.

Both engines score the same probe texts three ways: the sampler as it stands (its adapter at
its scale), the trainer with its LoRA, and the trainer with the LoRA off. Per token,

    effect = trainer(LoRA) - trainer(base)      what the adapter should do
    seen   = sampler       - trainer(base)      what the sampler's adapter does

and the least-squares slope of `seen` on `effect` is the adapter scale the sampler shows: 1
when it holds this run's adapter, 0 when it holds none, 0.5 at half scale, about 0 for another
run's adapter (uncorrelated), between for a partly loaded one. The engines' own numeric
disagreement (quantised activations, bf16) is noise around that slope, uncorrelated with the
adapter's effect, so it widens the slope's standard error instead of moving it.

Why not a mean |sampler - trainer| gap (the first guard): that gap grows with the noise as
the model sharpens, on texts it now finds unlikely, while the slope does not. The first guard
stopped a healthy run at step 18 (issue 27); see README, "Sync guard".

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


def probe_text(prompt_ids: list[int], completion_ids: list[int]) -> tuple[list[int], list[int]]:
    """A short (prompt, completion) pair both engines can score cheaply, cut from a sampled one."""
    prompt = list(prompt_ids)
    if len(prompt) > PROMPT_TAIL + 1:
        prompt = prompt[:1] + prompt[-PROMPT_TAIL:]
    return prompt, list(completion_ids[:COMPLETION_MAX])


@dataclass(frozen=True)
class SyncReading:
    """One check's numbers (all per probe token)."""

    tokens: int
    gap: float  # mean |sampler - trainer(LoRA)|: the first guard's figure, kept for comparison
    effect: float  # rms of the adapter's effect on the probe (trainer LoRA vs base)
    scale: float  # fitted adapter scale the sampler shows (nan: no effect to fit against)
    scale_se: float  # standard error of `scale` (inf: no effect to fit against)

    def metrics(self) -> dict[str, float]:
        """The step metrics a run stores (sync_*)."""
        out = {"sync_gap": round(self.gap, 5), "sync_effect": round(self.effect, 5), "sync_tokens": float(self.tokens)}
        if math.isfinite(self.scale):
            out.update(sync_scale=round(self.scale, 4), sync_scale_se=round(self.scale_se, 4))
        return out


def fit_scale(sampler_lp: np.ndarray, lora_lp: np.ndarray, base_lp: np.ndarray) -> SyncReading:
    """The adapter scale the sampler's log-probs show, fitted through the origin, with its error."""
    s, t, b = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (sampler_lp, lora_lp, base_lp))
    if not (s.shape == t.shape == b.shape) or s.size == 0:
        raise ValueError(f"fit_scale needs three equal, non-empty arrays (got {s.shape}, {t.shape}, {b.shape})")
    effect, seen = t - b, s - b
    gap = float(np.mean(np.abs(s - t)))
    ss = float(effect @ effect)
    rms_effect = math.sqrt(ss / effect.size)
    if ss == 0.0:  # a fresh LoRA (B = 0) changes nothing: there is nothing to fit
        return SyncReading(effect.size, gap, 0.0, math.nan, math.inf)
    scale = float(effect @ seen) / ss
    resid = seen - scale * effect
    dof = max(effect.size - 1, 1)
    se = math.sqrt(float(resid @ resid) / dof / ss)
    return SyncReading(effect.size, gap, rms_effect, scale, se)


def verdict(reading: SyncReading, expected: float, tolerance: float, confidence: float = 3.0) -> str | None:
    """None when the sampler is in sync (or the probe cannot tell), else one clause saying what is off.

    Out of sync means: the fitted scale lies further than `tolerance` from `expected` (the
    recipe's sampler.adapter_scale) by more than `confidence` standard errors, so the probe
    measured it outside the band, not merely near its edge. An adapter whose effect on the
    probe is still below the engines' noise (the first steps) cannot be told from none, and
    cannot matter yet either.
    """
    if not math.isfinite(reading.scale):
        return None
    if abs(reading.scale - expected) - tolerance <= confidence * reading.scale_se:
        return None
    return (f"the sampler's adapter acts at scale {reading.scale:.2f} +- {reading.scale_se:.2f} on the probe "
            f"texts, expected {expected:g} (tolerance {tolerance:g})")
