"""Held-out accuracy in a report: a run's evals against step and against minutes of step time, and
several runs beside each other on the eval protocol they share (what a method buys per CPU-minute)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .archive import Archive
from .plotting import figure, integer_steps, save_png


def eval_points(archive: Archive) -> dict[tuple[str, str], list[tuple[int | None, float, list]]]:
    """(benchmark, metric) -> [(step or None for base, value, ci)]."""
    out: dict[tuple[str, str], list] = {}
    for row in archive.evals():
        m = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        for metric in ("pass@1", "maj@k", "greedy"):
            if isinstance(m.get(metric), (int, float)):
                ci = m.get(f"{metric}_ci") or [math.nan, math.nan]
                out.setdefault((row["benchmark"], metric), []).append((row["step"], float(m[metric]), ci))
    return out


def step_minutes(steps: list[dict]) -> dict[int, float]:
    """Step -> minutes of step time spent up to the end of that step (phase-0 steps included):
    the x axis that compares methods by what they cost, not by how many steps they took."""
    out, total = {}, 0.0
    for row in sorted(steps, key=lambda r: r["step"]):
        m = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        seconds = m.get("seconds_step")
        total += float(seconds) if isinstance(seconds, (int, float)) else 0.0
        out[row["step"]] = total / 60
    return out


def plot_evals(path: Path, points: dict, minutes: dict[int, float] | None = None) -> Path:
    """Accuracy against step (base dashed), or with `minutes` against minutes of step time (base at 0)."""
    fig, ax = figure()
    for i, ((bench, metric), pts) in enumerate(sorted(points.items())):
        stepped = sorted((s, v, ci) for s, v, ci in pts if s is not None)
        base = [(v, ci) for s, v, ci in pts if s is None]
        label = f"{bench} {metric}"
        color = f"C{i % 10}"
        if minutes is not None:
            stepped = [(minutes[s], v, ci) for s, v, ci in stepped if s in minutes]
            stepped = ([(0.0, *base[-1])] if base else []) + stepped
            base = []
        if stepped:
            xs = [s for s, _, _ in stepped]
            ys = [100 * v for _, v, _ in stepped]
            lo = [100 * (v - ci[0]) if ci and ci[0] == ci[0] else 0 for _, v, ci in stepped]
            hi = [100 * (ci[1] - v) if ci and ci[1] == ci[1] else 0 for _, v, ci in stepped]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=color, label=f"{label} (95% CI)")
        if base:
            v, ci = base[-1]
            ax.axhline(100 * v, linestyle="--", color=color, alpha=0.8, label=f"{label}, base model")
            if ci and ci[0] == ci[0]:
                ax.axhspan(100 * ci[0], 100 * ci[1], color=color, alpha=0.1)
    if minutes is None:
        integer_steps(ax)
    ax.set_title("Benchmark accuracy" if minutes is None else "Benchmark accuracy against cost")
    ax.set_xlabel("training step (dashed: base model)" if minutes is None
                  else "minutes of step time (0: base model)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)


PROTOCOL = ("benchmark", "n_questions", "k", "max_tokens", "temperature", "top_p", "seed")


def run_curves(archive: Archive, metric: str = "pass@1") -> dict[tuple, list[tuple[float, float]]]:
    """Per eval protocol (PROTOCOL's settings), (minutes of step time, accuracy) of a run's evaluations,
    the newest base row at 0 minutes; only steps whose minutes are known count. Sorted by minutes.

    Keyed by protocol because one archive holds evals of different sizes (a small in-run eval and a
    200-question one), whose accuracies must not join one line."""
    minutes = step_minutes(archive.steps())
    rows: dict[tuple, dict] = {}
    for row in archive.evals():
        m = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        config = {**(m.get("config") or {}), "benchmark": row["benchmark"]}
        if not isinstance(m.get(metric), (int, float)):
            continue
        key = tuple(json.dumps(config.get(k), sort_keys=True) for k in PROTOCOL)
        got = rows.setdefault(key, {"base": None, "steps": {}})
        if row["step"] is None:
            got["base"] = float(m[metric])
        elif row["step"] in minutes:
            got["steps"][row["step"]] = float(m[metric])
    return {key: sorted(([(0.0, r["base"])] if r["base"] is not None else [])
                        + [(minutes[s], v) for s, v in r["steps"].items()])
            for key, r in rows.items() if r["steps"]}


def plot_runs(path: Path, curves: dict[str, list[tuple[float, float]]], benchmark: str, metric: str) -> Path:
    """Several runs' held-out accuracy against minutes of step time in one plot: what a method
    buys per CPU-minute, beside another method on the same eval."""
    fig, ax = figure()
    for i, (name, pts) in enumerate(curves.items()):
        ax.plot([m for m, _ in pts], [100 * v for _, v in pts], marker="o", color=f"C{i % 10}", label=name)
    ax.set_title(f"{benchmark} {metric} against cost")
    ax.set_xlabel("minutes of step time (0: base model)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)


def beside_section(archive: Archive, out: Path, beside: list[Path]) -> list[str]:
    """This run's held-out curve and the `beside` runs', on the eval protocol they all share with
    the most points, in one plot against minutes of step time, and a table."""
    from contextlib import ExitStack

    names = [archive.path.parent.name] + [Path(b).name for b in beside]
    with ExitStack() as stack:  # each other archive closed, also when a later one cannot be opened
        archives = [archive] + [stack.enter_context(Archive.open(b, readonly=True)) for b in beside]
        all_curves = [run_curves(a) for a in archives]
        methods = [(a.run_info() or {}).get("recipe", {}).get("method", {}).get("name", "?") for a in archives]
    shared = set(all_curves[0]).intersection(*all_curves[1:])
    md = ["## Beside other runs", ""]
    if not shared:
        return md + ["No eval protocol (benchmark, questions, samples, max tokens, temperature, top-p, seed) "
                     "is in every run's evals; nothing to compare.", ""]
    key = max(sorted(shared), key=lambda k: sum(len(c[k]) for c in all_curves))
    protocol = dict(zip(PROTOCOL, (json.loads(v) for v in key)))
    curves = {f"{n} ({m})": c[key] for n, m, c in zip(names, methods, all_curves)}
    plot_runs(out / "beside_minutes.png", curves, protocol["benchmark"], "pass@1")
    md += [f"![{protocol['benchmark']} pass@1 against minutes](beside_minutes.png)", "",
           "Protocol: " + ", ".join(f"{k} {v}" for k, v in protocol.items()), "",
           "| run | minutes: pass@1 % |", "|---|---|"]
    md += [f"| {n} | {', '.join(f'{m:.1f}: {100 * v:.1f}' for m, v in pts)} |" for n, pts in curves.items()]
    return md + [""]
