"""The sync guard's statistic (minisir/sync.py) on constructed log-probs: the fitted scale
recovers the scale an adapter acts at, noise widens its error instead of moving it, and the
verdict calls only what the probe measured well enough."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minisir.sync import fit_scale, verdict


def _engines(scale: float, effect_rms: float, noise: float, n: int = 400, seed: int = 0):
    """Trainer base/LoRA log-probs, and a sampler whose adapter acts at `scale` plus engine noise."""
    rng = np.random.default_rng(seed)
    base = -np.abs(rng.normal(1.0, 1.0, n))
    effect = rng.normal(0.0, effect_rms, n)
    sampler = base + scale * effect + rng.normal(0.0, noise, n)
    return sampler, base + effect, base


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 2.0])
def test_fitted_scale_recovers_the_scale_the_adapter_acts_at(scale):
    reading = fit_scale(*_engines(scale, effect_rms=0.3, noise=0.05))
    assert reading.scale == pytest.approx(scale, abs=4 * reading.scale_se)
    assert reading.scale_se < 0.05 and reading.tokens == 400


def test_engine_noise_that_grows_moves_the_old_gap_not_the_scale():
    """The first guard's failure (issue 27): noise on unlikely tokens grew, the mean gap with it."""
    calm = fit_scale(*_engines(1.0, effect_rms=0.3, noise=0.03))
    noisy = fit_scale(*_engines(1.0, effect_rms=0.3, noise=0.15))
    assert noisy.gap > calm.gap + 0.05  # the old guard's figure moves by more than its limit
    assert abs(noisy.scale - 1.0) < 4 * noisy.scale_se and noisy.scale_se > calm.scale_se


def test_no_effect_cannot_be_fitted_and_is_never_called():
    sampler, lora, base = _engines(1.0, effect_rms=0.0, noise=0.05)
    reading = fit_scale(sampler, base, base)  # a fresh LoRA: B = 0, the trainer's LoRA changes nothing
    assert math.isnan(reading.scale) and reading.effect == 0.0
    assert verdict(reading, expected=1.0, tolerance=0.25) is None
    assert "sync_scale" not in reading.metrics()


def test_verdict_calls_a_measured_fault_and_not_a_noisy_one():
    missing = fit_scale(*_engines(0.0, effect_rms=0.3, noise=0.05))
    assert "acts at scale -0.00" in verdict(missing, expected=1.0, tolerance=0.25)
    assert verdict(fit_scale(*_engines(1.0, effect_rms=0.3, noise=0.05)), 1.0, 0.25) is None
    # a user's deliberate sampler.adapter_scale is what the reading is held to
    half = fit_scale(*_engines(0.5, effect_rms=0.3, noise=0.05))
    assert verdict(half, expected=0.5, tolerance=0.25) is None and verdict(half, 1.0, 0.25) is not None
    # an effect far below the engines' noise: the estimate is too wide to call either way
    faint = fit_scale(*_engines(0.0, effect_rms=0.002, noise=0.05, n=20))
    assert faint.scale_se * 3 > 0.75 and verdict(faint, 1.0, 0.25) is None


def test_fit_scale_refuses_mismatched_arrays():
    with pytest.raises(ValueError, match="equal, non-empty"):
        fit_scale(np.zeros(3), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="equal, non-empty"):
        fit_scale(np.zeros(0), np.zeros(0), np.zeros(0))
