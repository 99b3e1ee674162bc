"""Markdown + PNG report of one run, read from its archive.

A run's health shows in a few curves (rewards, solve rate, valid-problem rate,
diversity, solution length, benchmark accuracy against step) and in what the teacher
wrote (concepts and example problems early/middle/late, lineage depth). Every
per-step curve prefers the metric the loop stored with the step and otherwise falls back
to recomputing it from the problem/solution tables; a curve with neither is skipped
with a note in the report, never an error (old or partial runs still get a report).

The archive is opened read-only, so a report can be built while the run is going.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .archive import Archive
from .difficulty import Difficulty, difficulty
from .plotting import figure, integer_steps, save_png
from .methods.curves import NOT_SEED, Curve, report_curves
from .prompting import one_line
from .report_evals import beside_section, eval_points, plot_evals, step_minutes

log = logging.getLogger(__name__)


def _series(archive: Archive, steps: list[dict], curve: Curve) -> tuple[dict[int, float], str]:
    """step -> value, and where it came from ("step metrics" | "tables" | "")."""
    stored = {}
    for row in steps:
        m = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        v = m.get(curve.key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            stored[int(row["step"])] = float(v)
    if stored:
        return stored, "step metrics"
    rows = archive.db.conn.execute(curve.sql).fetchall()
    computed = {int(s): float(v) for s, v in rows if s is not None and v is not None}
    return computed, ("tables" if computed else "")


def _rolling(y: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, y[0]), y])
    return np.convolve(padded, kernel, mode="valid")


def _plot_curves(path: Path, title: str, ylabel: str, series: dict[str, dict[int, float]], ylim) -> Path:
    fig, ax = figure()
    for label, data in series.items():
        xs = np.array(sorted(data))
        ys = np.array([data[x] for x in xs])
        if len(xs) > 20:  # noisy per-step values: faint raw line plus a moving average
            line, = ax.plot(xs, ys, alpha=0.3, linewidth=1)
            ax.plot(xs, _rolling(ys, max(2, len(xs) // 15)), color=line.get_color(), linewidth=2,
                    label=f"{label} (moving avg)")
        else:
            ax.plot(xs, ys, marker="o", linewidth=1.5, label=label)
    integer_steps(ax)
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)


def lineage_depths(archive: Archive) -> dict[int, int]:
    """Problem id -> generations from its root (a problem with no parent is depth 0)."""
    parent = dict(archive.db.conn.execute("SELECT id, parent_id FROM problems").fetchall())
    depth: dict[int, int] = {}
    for pid in parent:
        chain = []
        cur = pid
        while cur is not None and cur not in depth and cur in parent and len(chain) <= len(parent):
            chain.append(cur)
            cur = parent[cur]
        d = depth.get(cur, -1) if cur is not None else -1
        for node in reversed(chain):
            d += 1
            depth[node] = d
    return depth


def _plot_depths(path: Path, depths: list[int]) -> Path:
    fig, ax = figure()
    counts = Counter(depths)
    xs = list(range(0, max(counts) + 1))
    ax.bar(xs, [counts.get(x, 0) for x in xs], color="tab:blue", label="valid problems")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Lineage depth of valid problems")
    ax.set_xlabel("depth (generations from a root problem)")
    ax.set_ylabel("number of problems")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)


def _phases(steps: list[int]) -> list[tuple[str, list[int]]]:
    names = ("early", "middle", "late")
    if not steps:
        return []
    parts = np.array_split(np.array(sorted(steps)), min(3, len(steps)))
    return [(names[i] if len(parts) == 3 else f"part {i + 1}", [int(s) for s in p]) for i, p in enumerate(parts)]


def _concepts(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = value.split(",")
    if not isinstance(value, list):
        return []
    return [" ".join(str(c).lower().split()) for c in value if str(c).strip()]


def _md_escape(text: str, limit: int = 300) -> str:
    text = one_line(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def difficulty_rows(archive: Archive) -> list[tuple[int, Difficulty, float | None]]:
    """(step, features, solve rate) of every valid problem the policy proposed (not seeds or dataset questions)."""
    rows = archive.db.conn.execute(
        f"SELECT step, text, json_extract(extra, '$.program'), solve_rate FROM problems "
        f"WHERE valid = 1 AND text IS NOT NULL AND {NOT_SEED} AND COALESCE(role, '') != 'question' "
        f"ORDER BY id").fetchall()
    return [(int(step), difficulty(text, program), rate) for step, text, program, rate in rows]


def difficulty_by_step(rows: list[tuple[int, Difficulty, float | None]]) -> dict[str, dict[int, float]]:
    """Per-step means of the difficulty features (the curves of the report's difficulty panel)."""
    by_step: dict[int, list[Difficulty]] = {}
    for step, d, _ in rows:
        by_step.setdefault(step, []).append(d)
    return {
        "operators per problem": {s: float(np.mean([d.operators for d in ds])) for s, ds in by_step.items()},
        "largest number's digits": {s: float(np.mean([d.digits for d in ds])) for s, ds in by_step.items()},
        "word-problem share": {s: float(np.mean([d.word for d in ds])) for s, ds in by_step.items()},
        "program lines": {s: float(np.mean([d.program_lines for d in ds])) for s, ds in by_step.items()},
    }


def _difficulty_section(archive: Archive, out: Path, phases: list[tuple[str, list[int]]]) -> list[str]:
    """Whether the proposer climbs: its problems' difficulty per step, and the solve rate per kind."""
    md = ["## How hard the problems are", ""]
    rows = difficulty_rows(archive)
    if not rows or not phases:
        return md + ["No proposed problems yet.", ""]
    _plot_curves(out / "difficulty.png", "What the proposer writes", "mean per problem (rolling)",
                 difficulty_by_step(rows), None)
    md += ["![Difficulty](difficulty.png)", "",
           "Operators come from the problem's program when it has one (minisir/difficulty.py). Per phase: "
           "the share of problems of each kind, and in brackets their mean solve rate.", ""]
    kinds = sorted({d.kind for _, d, _ in rows})
    md += ["| phase | steps | problems | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for name, ph_steps in phases:
        chosen = [(d, r) for s, d, r in rows if ph_steps[0] <= s <= ph_steps[-1]]
        if not chosen:
            continue
        cells = []
        for kind in kinds:
            of_kind = [(d, r) for d, r in chosen if d.kind == kind]
            rates = [r for _, r in of_kind if r is not None]
            rate = f" ({np.mean(rates):.2f})" if rates else ""
            cells.append(f"{len(of_kind) / len(chosen):.2f}{rate}")
        md.append(f"| {name} | {ph_steps[0]}–{ph_steps[-1]} | {len(chosen)} | " + " | ".join(cells) + " |")
    return md + [""]


def _time_section(steps: list[dict]) -> list[str]:
    """Where a step's time goes (mean seconds per phase over RL steps), sampling speed, and how
    much of what was sampled was trained."""
    rl = [s["metrics"] for s in steps if isinstance(s.get("metrics"), dict) and s["metrics"].get("phase") != "pool"]
    phases = sorted({k for m in rl for k in m if k.startswith("seconds_") and k != "seconds_step"})
    if not rl or not phases:
        return []

    # derived (so archives written before it existed get it too), on copies: other sections read these
    rl = [{**m, "train_tokens_per_s": m["train_tokens"] / m["seconds_train"]}
          if isinstance(m.get("train_tokens"), (int, float)) and m["train_tokens"] > 0 and m.get("seconds_train")
          else m for m in rl]

    def mean(key: str) -> float | None:
        values = [float(m[key]) for m in rl if isinstance(m.get(key), (int, float))]
        return float(np.mean(values)) if values else None

    md = ["## Where a step's time goes", "", f"Means over {len(rl)} RL steps.", "", "| phase | seconds |", "|---|---|"]
    md += [f"| {k.removeprefix('seconds_')} | {mean(k):.2f} |" for k in phases if mean(k) is not None]
    md.append(f"| **step** | {_fmt(mean('seconds_step'))} |")
    rates = [(label, mean(key)) for label, key in (
        ("teacher / proposer sampling, tokens/s", "teacher_tokens_per_s"),
        ("student / solver sampling, tokens/s", "student_tokens_per_s"),
        ("completion tokens sampled per step", "sampled_tokens"),
        ("tokens trained per step", "train_tokens"),
        ("training, tokens/s (trained tokens / train phase)", "train_tokens_per_s"),
        ("share of sampled tokens trained", "trained_token_share"),
        ("sampler: seconds in prompt decodes", "sampler_prompt_s"),
        ("sampler: seconds in generation decodes", "sampler_decode_s"),
        ("sampler: seconds in numpy sampling", "sampler_sample_s"),
        ("sampler: generation batch occupancy (sequences per decode / n_parallel)", "decode_occupancy"),
        ("sampler: completions stopped as loops (sampler.loop_repeats)", "loop_stops"))]
    if any(v is not None for _, v in rates):
        md += ["", "| quantity | mean per step |", "|---|---|"]
        md += [f"| {label} | {_fmt(v)} |" for label, v in rates if v is not None]
    return md + [""]


def write_report(archive_path_or_run_dir: str | Path, out_dir: str | Path | None = None,
                 beside: list[Path] = ()) -> Path:
    """Write report.md and its PNG plots into out_dir (default <run dir>/report); return report.md.

    beside: other run directories whose held-out curves are drawn with this run's against minutes."""
    src = Path(archive_path_or_run_dir).expanduser()
    archive = Archive.open(src, readonly=True)
    try:
        out = Path(out_dir) if out_dir is not None else archive.path.parent / "report"
        out.mkdir(parents=True, exist_ok=True)
        return _write(archive, out, list(beside))
    finally:
        archive.close()


def _write(archive: Archive, out: Path, beside: list[Path]) -> Path:
    from .archive_stats import stats as archive_stats
    from .evaluate import format_table

    steps = archive.steps()
    stats = archive_stats(archive)
    info = archive.run_info() or {}
    recipe = info.get("recipe") or {}
    md: list[str] = ["# minisir run report", ""]
    md.append(f"Archive: `{archive.path}`  ")
    md.append(f"Generated: {time.strftime('%Y-%m-%d %H:%M:%S')}  ")
    if info:
        md.append(f"Run started: {time.strftime('%Y-%m-%d %H:%M', time.localtime(info['created_at']))}, "
                  f"seed {info.get('seed')}  ")
        for key in ("model", "method"):
            if key in recipe:
                md.append(f"{key}: `{json.dumps(recipe[key], sort_keys=True)[:300]}`  ")
    md += ["", "## Summary", "", "| quantity | value |", "|---|---|"]
    for key in ("steps", "last_step", "problems", "valid_problems", "solutions", "adapters",
                "mean_solve_rate", "mean_teacher_reward", "mean_diversity", "solution_agreement"):
        md.append(f"| {key.replace('_', ' ')} | {_fmt(stats.get(key))} |")
    if stats.get("invalid_reasons"):
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["invalid_reasons"].items())
        md.append(f"| invalid reasons | {_md_escape(reasons)} |")

    # ---------------------------------------------------------------- training curves
    md += ["", "## Training curves", ""]
    notes: list[str] = []
    first_last = []
    curves, panels = report_curves((recipe.get("method") or {}).get("name"))
    for fname, title, ylabel, keys, ylim in panels:
        series: dict[str, dict[int, float]] = {}
        missing = []
        for key in keys:
            data, source = _series(archive, steps, curves[key])
            if data:
                series[curves[key].label] = data
                xs = sorted(data)
                first_last.append((key, xs[0], data[xs[0]], xs[-1], data[xs[-1]], source))
            else:
                missing.append(f"`{key}`")
        why = "not in the step metrics and not computable from the archive tables"
        if not series:
            notes.append(f"- {title} ({', '.join(missing)}): {why}; plot skipped.")
            continue
        if missing:
            notes.append(f"- {', '.join(missing)}: {why}; left out of {fname}.")
        _plot_curves(out / fname, title, ylabel, series, ylim)
        md += [f"![{title}]({fname})", ""]
    if first_last:
        md += ["| metric | first step | value | last step | value | source |", "|---|---|---|---|---|---|"]
        md += [f"| {k} | {s0} | {v0:.3f} | {s1} | {v1:.3f} | {src} |" for k, s0, v0, s1, v1, src in first_last]
        md.append("")
    if notes:
        md += ["Notes:", *notes, ""]

    # ---------------------------------------------------------------- evaluations
    md += ["## Evaluation", ""]
    points = eval_points(archive)
    if points:
        plot_evals(out / "eval_accuracy.png", points)
        md += ["![Benchmark accuracy](eval_accuracy.png)", ""]
        minutes = step_minutes(steps)
        if any(s is not None and s in minutes for pts in points.values() for s, _, _ in pts):
            plot_evals(out / "eval_minutes.png", points, minutes)
            md += ["![Benchmark accuracy against minutes of step time](eval_minutes.png)", ""]
        rows = {}
        for i, row in enumerate(archive.evals()):
            m = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
            m = dict(m)
            m.setdefault("config", {})
            m["config"] = {**m["config"], "benchmark": row["benchmark"]}
            name = "base" if row["step"] is None else f"step {row['step']}, {minutes.get(row['step'], 0):.1f} min"
            rows[f"{name} (#{i + 1})"] = m
        md += [format_table(rows), ""]
    else:
        md += ["No evaluations recorded (run `minisir eval` on this run to add them).", ""]

    # ---------------------------------------------------------------- problems over the run
    md += ["## How the problems changed", ""]
    probs = archive.db.conn.execute(
        f"SELECT id, step, text, concepts, teacher_reward, solve_rate, majority_answer FROM problems "
        f"WHERE valid = 1 AND {NOT_SEED} ORDER BY id"
    ).fetchall()
    phases = _phases([int(s["step"]) for s in steps])
    if not probs or not phases:
        md += ["No valid teacher problems yet.", ""]
    else:
        by_step: dict[int, list] = {}
        for p in probs:
            by_step.setdefault(p[1], []).append(p)
        md += ["### Most frequent concepts", "", "| phase | steps | valid problems | top concepts (count) |",
               "|---|---|---|---|"]
        for name, ph_steps in phases:
            rows = [p for s in ph_steps for p in by_step.get(s, [])]
            counts = Counter(c for p in rows for c in _concepts(p[3]))
            top = ", ".join(f"{c} ({n})" for c, n in counts.most_common(8)) or "-"
            md.append(f"| {name} | {ph_steps[0]}–{ph_steps[-1]} | {len(rows)} | {_md_escape(top, 500)} |")
        md += ["", "### Example problems", ""]
        for name, ph_steps in phases:
            rows = [p for s in ph_steps for p in by_step.get(s, [])]
            if not rows:
                continue
            best = sorted(rows, key=lambda p: (-(p[4] if p[4] is not None else -math.inf), p[0]))[:3]
            md.append(f"**{name}** (steps {ph_steps[0]}–{ph_steps[-1]}; highest teacher reward first)")
            md.append("")
            for p in best:
                extra = f"step {p[1]}, teacher reward {_fmt(p[4])}, solve rate {_fmt(p[5])}, answer {p[6]}"
                md.append(f"- {_md_escape(p[2])} _({extra})_")
            md.append("")
        depth = lineage_depths(archive)
        valid_depths = [depth[p[0]] for p in probs if p[0] in depth]
        if valid_depths:
            _plot_depths(out / "lineage_depth.png", valid_depths)
            md += ["### Lineage depth", "", "![Lineage depth](lineage_depth.png)", "",
                   f"Mean depth {np.mean(valid_depths):.2f}, max {max(valid_depths)} "
                   f"(depth = generations from a root problem such as the seed).", ""]
    md += _difficulty_section(archive, out, _phases([int(s["step"]) for s in steps]))
    md += _time_section(steps)
    if beside:
        md += beside_section(archive, out, beside)
    path = out / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    log.info("report written to %s", path)
    return path
