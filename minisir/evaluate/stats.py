"""Scores and paired statistics: per-question scores, metrics with intervals, compare() and tables.

Intervals: every metric is a mean of question-level scores (for pass@1 the question's
mean over its k samples), so its 95% interval is the normal approximation
mean +- 1.96 * sd / sqrt(n) over questions (sd with ddof=1), clipped to [0, 1].
Averaging the k samples per question first is what makes the interval honest: samples
of one question are not independent. compare() uses the same formula on paired
per-question differences, which removes question difficulty from the noise. With
fewer than ~30 questions the interval is rough; with 1 question it is undefined (NaN).

Significance: the normal interval is unreliable for the small question counts an eval
often uses, so compare() also gives two paired tests that are exact for small n:
a two-sided sign test (wins vs losses, ties dropped) and a sign-flip permutation test
on the per-question differences (exact up to 20 non-zero differences, else a seeded
Monte Carlo). `significant` means the permutation p-value is below 0.05; the interval
stays as a description of the effect size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from ..answers import majority_vote, matches
from ..errors import MinisirError

Z95 = 1.959963984540054
METRICS = ("pass@1", "maj@k", "greedy")  # question-level scores kept per record


def mean_ci(scores: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): normal-approximation 95% interval over question-level scores."""
    x = np.asarray(scores, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = Z95 * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def _clip01(lo: float, hi: float) -> list[float]:
    return [max(0.0, lo) if not math.isnan(lo) else lo, min(1.0, hi) if not math.isnan(hi) else hi]


def score_question(answers: Sequence[str | None], reference: str) -> dict:
    """Question-level scores from k extracted answers: pass@1 (mean correct) and maj@k.

    maj@k uses majority_vote (ties -> the earliest answer class, unparsed answers never
    vote); the question counts as solved when the winning answer equals the reference.
    """
    correct = [matches(a, reference) for a in answers]
    vote = majority_vote(list(answers))
    return {
        "correct": correct,
        "pass@1": sum(correct) / len(correct) if correct else 0.0,
        "maj_answer": vote.answer,
        "maj@k": float(vote.answer is not None and matches(vote.answer, reference)),
    }


def aggregate(records: Sequence[dict]) -> dict:
    """Metric means with 95% intervals over questions (see module docstring)."""
    out: dict[str, Any] = {"n_questions": len(records)}
    for name in METRICS:
        vals = [r[name] for r in records if r.get(name) is not None]
        if not vals:
            continue
        m, lo, hi = mean_ci(vals)
        out[name] = m
        out[f"{name}_ci"] = _clip01(lo, hi)
    return out


@dataclass
class EvalResult:
    config: dict
    metrics: dict
    records: list[dict]
    label: str = ""

    def scores(self) -> dict[str, dict[str, float]]:
        return {r["id"]: {m: r[m] for m in METRICS if r.get(m) is not None} for r in self.records}

    def to_archive(self) -> dict:
        """What add_eval stores: settings, metrics and compact per-question scores."""
        return {
            **self.metrics, "config": self.config, "label": self.label,
            "questions": [{"id": r["id"], **{m: r[m] for m in METRICS if r.get(m) is not None}} for r in self.records],
        }


def _scores_of(res: EvalResult | dict) -> dict[str, dict[str, float]]:
    if isinstance(res, EvalResult):
        return res.scores()
    rows = res.get("questions") or res.get("records")
    if not rows:
        raise MinisirError("compare: result has no per-question scores (re-run the eval with this minisir)")
    return {r["id"]: {m: r[m] for m in METRICS if r.get(m) is not None} for r in rows}


ALPHA = 0.05  # `significant` in compare(): permutation p-value below this
PERM_EXACT_MAX = 20  # exact sign-flip enumeration up to 2**20 sign patterns
PERM_SAMPLES = 20_000  # Monte Carlo sign flips beyond that
_TIE = 1e-12  # |difference| at or below this is a tie (float noise of equal scores)


def _binom_two_sided_exact(k: int, n: int) -> float:
    """Two-sided exact binomial p-value at p=1/2 with integer arithmetic (no scipy needed).

    Sum of the probabilities of all outcomes as unlikely as k: by symmetry
    2 * P(X <= min(k, n - k)), capped at 1.
    """
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def sign_test(diffs: Sequence[float]) -> dict[str, Any]:
    """Exact two-sided sign test on paired differences; ties (zero differences) are dropped.

    Why: it asks only "does a win more questions than it loses?", needs no distribution
    assumption and is exact for any n. All ties -> p = 1 (no evidence either way).
    """
    wins = sum(1 for d in diffs if d > _TIE)
    losses = sum(1 for d in diffs if d < -_TIE)
    n = wins + losses
    if n == 0:
        p = 1.0
    else:
        try:
            from scipy.stats import binomtest
        except ImportError:  # scipy is optional: the exact sum is the same number
            p = _binom_two_sided_exact(wins, n)
        else:
            p = min(1.0, float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue))
    return {"p": p, "wins": wins, "losses": losses, "ties": len(diffs) - n}


def permutation_test(diffs: Sequence[float], seed: int = 0, samples: int = PERM_SAMPLES,
                     exact_max: int = PERM_EXACT_MAX) -> dict[str, Any]:
    """Two-sided paired permutation (sign-flip) test of mean difference 0.

    Why: under "a and b are exchangeable on each question" every difference is equally
    likely to have either sign, so the p-value is the share of the 2**m sign patterns of
    the m non-zero differences whose |sum| is at least the observed |sum|. Unlike the sign
    test it weighs how large each difference is (pass@1 differences are fractions).
    Exact enumeration for m <= exact_max; beyond, `samples` seeded random flips with
    p = (1 + hits) / (1 + samples), which is never 0 and stays a valid p-value.
    Zero differences do not change any sum, so dropping them changes nothing.
    """
    x = np.asarray([abs(d) for d in diffs if abs(d) > _TIE], dtype=np.float64)
    m = len(x)
    if m == 0:
        return {"p": 1.0, "method": "exact", "nonzero": 0}
    observed = abs(float(sum(d for d in diffs if abs(d) > _TIE)))
    tol = 1e-9 * max(1.0, float(x.sum()))  # equal sums must count as "at least as extreme"
    if m <= exact_max:
        # all subset sums S of |d| (which signs are flipped to minus): the signed sum is total - 2S
        sums = np.zeros(1)
        for v in x:
            sums = np.concatenate([sums, sums + v])
        stat = np.abs(x.sum() - 2.0 * sums)
        return {"p": float(np.mean(stat >= observed - tol)), "method": "exact", "nonzero": m}
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    chunk = max(1, min(samples, 2_000_000 // m))  # bound memory: chunk x m signs
    while done < samples:
        size = min(chunk, samples - done)
        signs = rng.integers(0, 2, size=(size, m), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ x) >= observed - tol))
        done += size
    return {"p": (1 + hits) / (1 + samples), "method": f"monte-carlo ({samples} flips, seed {seed})", "nonzero": m}


def compare(results_a: EvalResult | dict, results_b: EvalResult | dict, seed: int = 0) -> dict[str, dict]:
    """a - b per metric over the questions both evaluated: paired 95% interval and p-values.

    Accepts EvalResult or the dict stored by add_eval. Different question sets are
    matched by id; none in common is a user error (different benchmark or seed).
    Per metric: a, b, diff, ci (normal, paired), n, p_sign (exact sign test, ties
    dropped), p_perm (sign-flip permutation test; perm_method says exact or Monte Carlo,
    seeded by `seed`), wins/losses/ties, and significant = p_perm < ALPHA (0.05). The
    permutation test defines significance because it is exact at the small n evals use,
    where the normal interval is not.
    """
    a, b = _scores_of(results_a), _scores_of(results_b)
    common = [q for q in a if q in b]
    if not common:
        raise MinisirError("compare: the two results share no question ids; use the same benchmark, n and seed")
    out: dict[str, dict] = {}
    for name in METRICS:
        ids = [q for q in common if name in a[q] and name in b[q]]
        if not ids:
            continue
        diffs = [a[q][name] - b[q][name] for q in ids]
        d, lo, hi = mean_ci(diffs)
        sign = sign_test(diffs)
        perm = permutation_test(diffs, seed=seed)
        out[name] = {
            "a": float(np.mean([a[q][name] for q in ids])),
            "b": float(np.mean([b[q][name] for q in ids])),
            "diff": d, "ci": [lo, hi], "n": len(ids),
            "p_sign": sign["p"], "p_perm": perm["p"], "perm_method": perm["method"],
            "wins": sign["wins"], "losses": sign["losses"], "ties": sign["ties"],
            "significant": bool(perm["p"] < ALPHA),
        }
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def format_table(results: Sequence[EvalResult | dict] | dict[str, EvalResult | dict]) -> str:
    """Markdown table of accuracies in % with [95% CI]; dict keys (or .label) name rows."""
    items = results.items() if isinstance(results, dict) else [
        (r.label if isinstance(r, EvalResult) else r.get("label", ""), r) for r in results
    ]
    lines = ["| model | benchmark | n | k | pass@1 % | maj@k % | greedy % |", "|---|---|---|---|---|---|---|"]
    for label, res in items:
        m = res.metrics if isinstance(res, EvalResult) else res
        cfg = res.config if isinstance(res, EvalResult) else res.get("config", {})
        cells = []
        for name in METRICS:
            if name in m:
                lo, hi = m.get(f"{name}_ci", [math.nan, math.nan])
                cells.append(f"{_pct(m[name])} [{_pct(lo)}, {_pct(hi)}]")
            else:
                cells.append("-")
        lines.append(f"| {label or '-'} | {cfg.get('benchmark', '?')} | {m.get('n_questions', '?')} | "
                     f"{cfg.get('k', '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def format_compare(diff: dict[str, dict], label_a: str = "a", label_b: str = "b") -> str:
    """Markdown table of a - b with the paired interval, both p-values and wins/losses/ties."""
    lines = [f"| metric | {label_a} % | {label_b} % | diff (pp) [95% CI] | p perm | p sign | +/-/= | n |",
             "|---|---|---|---|---|---|---|---|"]
    methods = set()
    for name, d in diff.items():
        lo, hi = d["ci"]
        star = " *" if d["significant"] else ""
        methods.add(d.get("perm_method", "exact"))
        lines.append(f"| {name} | {_pct(d['a'])} | {_pct(d['b'])} | {_pct(d['diff'])} "
                     f"[{_pct(lo)}, {_pct(hi)}] | {_p(d.get('p_perm'))}{star} | {_p(d.get('p_sign'))} | "
                     f"{d.get('wins', '-')}/{d.get('losses', '-')}/{d.get('ties', '-')} | {d['n']} |")
    lines += ["", f"* = paired permutation p < {ALPHA} ({', '.join(sorted(methods))}); "
              "p sign = exact sign test, ties dropped; +/-/= = questions where "
              f"{label_a} scored higher / lower / the same."]
    return "\n".join(lines)
