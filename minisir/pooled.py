"""Evidence pooled over training seeds, and accuracy broken down by question kind.

One training run is one draw of the training noise: a gain seen in one seed may not
come back in the next. `pooled_compare` takes, for S runs (seeds), each run's base and
trained results on the same questions and asks whether training helps across seeds,
with the question as the unit of the test (see its docstring for why).

`by_kind` splits base and trained accuracy by the benchmark's question kinds (add, sub,
mul, div, word in arithmetic-easy), so a gain in one kind is not hidden by the mean.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import MinisirError
from .evaluate.benchmarks import BENCHMARKS, load_benchmark
from .evaluate.stats import (ALPHA, METRICS, EvalResult, _p, _pct, _scores_of, compare, format_compare, mean_ci,
                             permutation_test, sign_test)

Result = EvalResult | dict
Pair = tuple[Result | None, Result | None]  # (base = A, trained = B) of one run


def _matched(pairs: Sequence[Pair]) -> tuple[list[tuple[dict, dict]], list[str]]:
    """Per-question scores of every (base, trained) pair and the question ids all of them share."""
    if not pairs:
        raise MinisirError("pooled compare: no runs given")
    scored = []
    for i, (a, b) in enumerate(pairs):
        if a is None or b is None:
            raise MinisirError(f"pooled compare: run {i + 1} lacks a {'base' if a is None else 'trained'} result")
        scored.append((_scores_of(a), _scores_of(b)))
    common = [q for q in scored[0][0] if all(q in a and q in b for a, b in scored)]
    if not common:
        raise MinisirError("pooled compare: the runs share no question ids; evaluate all with the same "
                           "benchmark, --n and --seed")
    return scored, common


def pooled_compare(pairs: Sequence[Pair], seed: int = 0) -> dict[str, Any]:
    """Trained - base per metric over S runs (seeds) that answered the same questions.

    Returns n_seeds, n_questions, runs (each run's own compare(trained, base)) and pooled:
    per metric the keys of compare() (a = trained, b = base, diff = a - b, ci, n, p_sign,
    p_perm, wins/losses/ties over questions, significant) plus n_seeds, seed_diffs (each
    seed's mean difference on the pooled questions) and seed_diff_min / seed_diff_max.

    Why cluster by question: the seeds answer the SAME questions, so the S differences on
    one question share its difficulty (and, via the eval cache, even the same base samples);
    they are not independent. Treating the Q*S differences as independent would count each
    question S times, shrink the interval by about sqrt(S) and give p-values that are far too
    small. So per question q, d_q = mean over seeds of (B_s(q) - A_s(q)), and the interval,
    the exact sign test and the sign-flip permutation test run over the Q values d_q (n = Q):
    under "training does nothing" each d_q is as likely positive as negative. The mean of
    d_q equals the mean of the per-seed differences; their min/max shows whether one seed
    carries the effect, which the question-level test alone does not.
    """
    scored, common = _matched(pairs)
    runs = [compare(b, a, seed=seed) for a, b in pairs]
    pooled: dict[str, dict] = {}
    for name in METRICS:
        ids = [q for q in common if all(name in a[q] and name in b[q] for a, b in scored)]
        if ids:
            pooled[name] = _paired(scored, ids, name, seed)
    return {"n_seeds": len(pairs), "n_questions": len(common), "runs": runs, "pooled": pooled}


def _paired(scored: list[tuple[dict, dict]], ids: Sequence[str], name: str, seed: int = 0) -> dict[str, Any]:
    """One metric's paired evidence over `ids`, clustered by question (pooled_compare says why): means,
    diff, interval, sign and permutation p-values, and each seed's own mean difference."""
    base = np.array([[a[q][name] for q in ids] for a, _ in scored])  # seeds x questions
    trained = np.array([[b[q][name] for q in ids] for _, b in scored])
    d_q = (trained - base).mean(axis=0)
    seed_diffs = [float(x) for x in (trained - base).mean(axis=1)]
    d, lo, hi = mean_ci(d_q)
    sign, perm = sign_test(d_q), permutation_test(d_q, seed=seed)
    return {
        "a": float(trained.mean()), "b": float(base.mean()), "diff": d, "ci": [lo, hi], "n": len(ids),
        "p_sign": sign["p"], "p_perm": perm["p"], "perm_method": perm["method"],
        "wins": sign["wins"], "losses": sign["losses"], "ties": sign["ties"],
        "significant": bool(perm["p"] < ALPHA),
        "n_seeds": len(scored), "seed_diffs": seed_diffs,
        "seed_diff_min": min(seed_diffs), "seed_diff_max": max(seed_diffs),
    }


def question_kinds(benchmark: str, n: int | None = None, seed: int = 0) -> dict[str, str]:
    """Question id -> kind for benchmarks whose questions have kinds, else {}: the arithmetic levels,
    and a JSONL file whose rows carry "kind" (or else "category").

    Why reload: eval records (and cached or archived results) keep only ids and scores; the
    seeded generator or the file gives the same ids with their kinds again, in milliseconds. The
    named benchmarks without kinds are not loaded at all.
    """
    name = str(benchmark)
    if name in BENCHMARKS and not name.startswith("arithmetic"):
        return {}
    kinds = {}
    for q in load_benchmark(benchmark, n, seed):
        kind = q.meta.get("kind", q.meta.get("category"))
        if isinstance(kind, (str, int, float)) and not isinstance(kind, bool):
            kinds[q.id] = str(kind)
    return kinds


def _record_kinds(res: Result) -> dict[str, str]:
    """Kinds a result carries itself (a record's "kind" or meta["kind"]), if any."""
    rows = res.records if isinstance(res, EvalResult) else (res.get("questions") or res.get("records") or [])
    out = {}
    for r in rows:
        kind = r.get("kind") or (r.get("meta") or {}).get("kind")
        if kind is not None:
            out[r["id"]] = str(kind)
    return out


def pooled_by_kind(pairs: Sequence[Pair], kinds: dict[str, str] | None = None, seed: int = 0) -> dict[str, dict]:
    """Per kind and metric: base and trained means over the kind's questions and all seeds, diff, n, and
    the permutation p over the kind's questions, so "every kind up" and "no kind down" can be tested.

    kinds maps question id -> kind (see question_kinds); kinds stored in the records are
    used too. Questions without a kind are left out; no kinds at all gives {}.
    """
    scored, common = _matched(pairs)
    known = {**{k: v for a, b in pairs for r in (a, b) for k, v in _record_kinds(r).items()}, **(kinds or {})}
    out: dict[str, dict] = {}
    for kind in dict.fromkeys(known[q] for q in common if q in known):  # first-seen order
        of_kind = [q for q in common if known.get(q) == kind]
        row: dict[str, dict] = {}
        for name in METRICS:
            ids = [q for q in of_kind if all(name in a[q] and name in b[q] for a, b in scored)]
            if not ids:
                continue
            got = _paired(scored, ids, name, seed)
            row[name] = {"base": got["b"], "trained": got["a"], "diff": got["diff"], "n": got["n"],
                         "p_perm": got["p_perm"]}
        if row:
            out[kind] = row
    return out


def by_kind(result_a: Result, result_b: Result, kinds: dict[str, str] | None = None,
            seed: int = 0) -> dict[str, dict]:
    """One run's breakdown by kind: result_a is the base, result_b the trained model."""
    return pooled_by_kind([(result_a, result_b)], kinds, seed)


def restrict(result: Result, ids: set[str]) -> dict:
    """A result cut down to the questions in `ids`, in the stored-dict form compare() reads: a paired
    test over a chosen set of kinds (`minisir eval --kinds`) is then the same test on fewer questions."""
    return {"questions": [{"id": q, **scores} for q, scores in _scores_of(result).items() if q in ids]}


def format_by_kind(table: dict[str, dict], label_base: str = "base", label_trained: str = "trained") -> str:
    """Markdown table: per kind, base % / trained % (diff pp, permutation p) for each metric."""
    names = [m for m in METRICS if any(m in row for row in table.values())]
    lines = ["| kind | n | " + " | ".join(f"{m} {label_base} / {label_trained} % (diff pp, p perm)" for m in names)
             + " |",
             "|---|---|" + "---|" * len(names)]
    for kind, row in table.items():
        n = max(v["n"] for v in row.values())
        cells = [f"{_pct(row[m]['base'])} / {_pct(row[m]['trained'])} ({100 * row[m]['diff']:+.1f}"
                 + (f", p {_p(row[m]['p_perm'])})" if "p_perm" in row[m] else ")") if m in row else "-" for m in names]
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_runs(labels: Sequence[str], runs: Sequence[dict[str, dict]]) -> str:
    """One line per run: its own diff (pp) [95% CI] and permutation p per metric."""
    names = [m for m in METRICS if any(m in r for r in runs)]
    lines = ["| run | " + " | ".join(f"{m} diff (pp) [95% CI] p perm" for m in names) + " |",
             "|---|" + "---|" * len(names)]
    for label, run in zip(labels, runs):
        cells = []
        for m in names:
            d = run.get(m)
            cells.append("-" if d is None else f"{100 * d['diff']:+.1f} [{_pct(d['ci'][0])}, {_pct(d['ci'][1])}] "
                         f"{_p(d['p_perm'])}{' *' if d['significant'] else ''}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_pooled(result: dict[str, Any], label_a: str = "trained", label_b: str = "base") -> str:
    """The pooled table (compare's columns, n = questions) and each metric's per-seed spread."""
    pooled = result["pooled"]
    lines = [f"Pooled over {result['n_seeds']} seeds x {result['n_questions']} questions "
             "(unit: question, its difference averaged over seeds):", "",
             format_compare(pooled, label_a, label_b), "",
             "| metric | seeds | per-seed diff (pp) | min | max |", "|---|---|---|---|---|"]
    for name, d in pooled.items():
        lines.append(f"| {name} | {d['n_seeds']} | " + ", ".join(f"{100 * x:+.1f}" for x in d["seed_diffs"])
                     + f" | {100 * d['seed_diff_min']:+.1f} | {100 * d['seed_diff_max']:+.1f} |")
    return "\n".join(lines)


__all__ = ["by_kind", "format_by_kind", "format_pooled", "format_runs", "pooled_by_kind", "pooled_compare",
           "question_kinds"]
