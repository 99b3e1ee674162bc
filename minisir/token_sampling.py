"""Drawing tokens from logits in numpy: full-vocabulary, nucleus and greedy sampling, with the
log-probability of each draw under the distribution it was drawn from.

Kept apart from the scheduler (`sampler.py`) because it is pure arithmetic on arrays: it is tested
against the definitions without a model, and it costs a fixed share of every sampled token.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_NUCLEUS_FLOORS = (1e-3, 1e-6)  # nucleus candidates: tokens at least this share of the top one's probability


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log p(token) under softmax(logits), computed stably in float64."""
    m = float(logits.max())
    lse = m + float(np.log(np.exp(logits - m, dtype=np.float64).sum()))
    return float(logits[token]) - lse


_BLOCK = 1024  # vocabulary block for two-level inverse-CDF sampling


def sample_rows(
    logits: np.ndarray, temperature: float, top_p: float, rngs: Sequence[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one token per row; return tokens and their log-probs under the tempered distribution.

    The log-probs are log softmax(logits / T): the policy that sampled, which the trainer
    scores the same way (as TRL and verl do), so the importance weight compares like with
    like. Temperature 0 is greedy, with raw (T = 1) log-probs. Full-vocabulary sampling uses a two-level inverse CDF (block
    sums, then one block), so a 262k vocabulary costs one exp pass and no full cumsum; the
    block sums also give the normaliser. Nucleus sampling sorts only the top candidates
    unless their mass falls short of `top_p`.
    """
    rows = np.arange(len(logits))
    m = logits.max(axis=1, keepdims=True)
    if temperature <= 0:
        toks = logits.argmax(axis=1)
        return toks, logits[rows, toks] - _logsumexp(logits, m)
    inv_t = np.float32(1.0 / temperature)
    shifted = np.subtract(logits, m)
    expd = np.exp(shifted * inv_t if temperature != 1.0 else shifted)
    blocks = _block_sums(expd)
    log_z = np.log(blocks.sum(axis=1))
    u = np.array([rng.random() for rng in rngs])
    if top_p >= 1.0:
        toks = _inverse_cdf(expd, blocks, u)
    else:
        toks = _nucleus_rows(expd, top_p, u)
    return toks, shifted[rows, toks].astype(np.float64) * float(inv_t) - log_z


def _logsumexp(logits: np.ndarray, m: np.ndarray) -> np.ndarray:
    return m[:, 0] + np.log(_block_sums(np.exp(logits - m)).sum(axis=1))


def _block_sums(probs: np.ndarray) -> np.ndarray:
    """(rows, ceil(V / _BLOCK)) float64 sums of consecutive vocabulary blocks."""
    n, v = probs.shape
    if v % _BLOCK == 0:
        return probs.reshape(n, v // _BLOCK, _BLOCK).sum(axis=2).astype(np.float64)
    return np.add.reduceat(probs, np.arange(0, v, _BLOCK), axis=1, dtype=np.float64)


def _inverse_cdf(probs: np.ndarray, blocks: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index where each row's unnormalised CDF crosses u * total, blockwise."""
    cum = np.cumsum(blocks, axis=1)
    out = np.empty(len(probs), dtype=np.int64)
    for r in range(len(probs)):
        target = u[r] * cum[r, -1]
        b = min(int(np.searchsorted(cum[r], target, side="right")), cum.shape[1] - 1)
        before = cum[r, b - 1] if b else 0.0
        start = b * _BLOCK
        inner = np.cumsum(probs[r, start : start + _BLOCK], dtype=np.float64)
        k = min(int(np.searchsorted(inner, target - before, side="right")), len(inner) - 1)
        out[r] = start + k
    return out


def _block_max(probs: np.ndarray) -> np.ndarray:
    """(rows, ceil(V / _BLOCK)) maxima of consecutive vocabulary blocks."""
    n, v = probs.shape
    if v % _BLOCK == 0:
        return probs.reshape(n, v // _BLOCK, _BLOCK).max(axis=2)
    return np.maximum.reduceat(probs, np.arange(0, v, _BLOCK), axis=1)


def _nucleus_rows(expd: np.ndarray, top_p: float, u: np.ndarray) -> np.ndarray:
    """One nucleus draw per row of unnormalised probabilities."""
    bmax = _block_max(expd)
    totals = expd.sum(axis=1, dtype=np.float64)  # in float64, as the definition sums: the cut is exact
    return np.array([_nucleus(expd[r], bmax[r], float(totals[r]), top_p, float(u[r])) for r in range(len(expd))],
                    dtype=np.int64)


def _nucleus(probs: np.ndarray, bmax: np.ndarray, total: float, top_p: float, u: float) -> int:
    """Sample from the smallest set of top tokens holding `top_p` of the mass.

    Sorting the whole vocabulary for every token costs milliseconds a row, more than the rest of
    sampling. The nucleus is always the top of the sorted list, so only tokens at or above a floor
    are gathered, from the blocks whose maximum reaches it (`bmax`); if they hold `top_p` of the mass
    (`total`), every token left out is smaller than every one kept and the draw is exactly the
    full sort's. Lower floors, then the whole vocabulary, cover flat distributions. Ties sort by
    token id.
    """
    need = top_p * total
    top = float(bmax.max())
    for floor in (top * _NUCLEUS_FLOORS[0], top * _NUCLEUS_FLOORS[1], None):
        if floor is None:
            cand = np.arange(len(probs))
            break
        hit = np.flatnonzero(bmax >= floor)
        cand = (hit[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
        cand = cand[cand < len(probs)]
        cand = cand[probs[cand] >= floor]
        if float(probs[cand].sum(dtype=np.float64)) >= need:
            break
    cand = cand[np.argsort(-probs[cand], kind="stable")]
    cum = np.cumsum(probs[cand], dtype=np.float64)
    keep = min(int(np.searchsorted(cum, need, side="left")) + 1, len(cum))
    cum = cum[:keep]
    return int(cand[min(int(np.searchsorted(cum, u * cum[-1], side="right")), keep - 1)])
