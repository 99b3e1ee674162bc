"""Per block of steps, how hard a run's proposer wrote and how its solvers did, from the archive.

    python scripts/climb_stats.py runs/climb4-s7 [--block 10]

Read by RESULTS.md's climbing rule: the share of valid proposed problems whose program takes two or
more operations (minisir.difficulty.computation, identities left out), and the solve rate of those
problems on their first 8 samples (by solution id; stretch samples come after them). Also: stretch
problems and how many got a right answer, mean teacher reward, solve rate, solution tokens, the share
of solver completions that never finished (hit the token limit or looped), and seconds a step (with
the stretch phase's share). And the labels' own check: of the valid bare-expression problems
("What is 5 + (2 + 3)?"), the share whose label is not the expression's exact value (a proposer's
program that computed something else; labels.own_value_check refuses them since the seventh
sitting), and the multi-operation first-8 solve rate over the problems whose label is not one of them.

`--classes` adds a second table: the first-8 solve rate per class of computation (operations 1, 2,
3+; the largest operand's digits 1, 2, 3+), right labels only. A pooled multi-operation rate moves
with the mix of classes as well as with the solvers (three-operation chains are harder than two), so
"did the solvers improve" is read class by class there. Its last column sums the multi-operation
classes with a two-digit or larger operand (the kind `arithmetic-medium` asks): the expected number of
those problems solved, their first-8 solve rate times their number.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from minisir.difficulty import computation
from minisir.labels import bare_expression, exact_value


def mislabelled(text: str, label: str | None) -> bool | None:
    """Whether a bare expression's label is not its exact value (None: not a bare expression)."""
    expr = bare_expression(text or "")
    return None if not expr or label is None else exact_value(expr) != label


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--classes", action="store_true", help="also the solve rate per class of computation")
    args = ap.parse_args()
    db = sqlite3.connect(f"file:{args.run_dir / 'archive.sqlite'}?mode=ro", uri=True)
    steps = {s: json.loads(m) for s, m in db.execute("SELECT step, metrics FROM steps")}
    cols = {r[1] for r in db.execute("PRAGMA table_info(problems)")}
    label = "label" if "label" in cols else "NULL"  # schema 1 archives: `minisir archive upgrade` first
    problems = db.execute(f"SELECT id, step, text, extra, teacher_reward, {label} FROM problems "
                          "WHERE role = 'proposer' AND valid = 1").fetchall()
    wrong = {p[0]: mislabelled(p[2], p[5]) for p in problems}  # problem id -> its bare-expression check
    first8: dict[int, list[float]] = {}
    unfinished: dict[int, list[int]] = {}  # step -> [completions that hit the limit or looped, all completions]
    for pid, reward, step, finish in db.execute(
            "SELECT s.problem_id, s.reward, p.step, s.finish_reason FROM solutions s "
            "JOIN problems p ON p.id = s.problem_id ORDER BY s.id"):
        got = first8.setdefault(pid, [])
        if len(got) < 8:
            got.append(1.0 if (reward or 0) > 0 else 0.0)
        count = unfinished.setdefault(step, [0, 0])
        count[0] += finish in ("length", "loop")
        count[1] += 1
    print("| steps | valid problems | multi-op share | multi-op first-8 solve | stretch (right) | teacher reward "
          "| solve rate | solution tokens | unfinished solutions | s a step (stretch) | mislabelled bare expressions "
          "| multi-op first-8 solve, right labels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    last = max(steps) if steps else -1
    for lo in range(0, last + 1, args.block):
        hi = lo + args.block - 1
        rows = [p for p in problems if lo <= p[1] <= hi]
        multi = [p for p in rows if computation(p[2], (json.loads(p[3] or "{}")).get("program"))[0] >= 2]
        solved = [sum(first8[p[0]]) / len(first8[p[0]]) for p in multi if first8.get(p[0])]
        ms = [steps[s] for s in range(lo, hi + 1) if s in steps]
        bare = [wrong[p[0]] for p in rows if wrong[p[0]] is not None]
        right = [sum(first8[p[0]]) / len(first8[p[0]]) for p in multi if first8.get(p[0]) and not wrong[p[0]]]

        def mean(key: str) -> float:
            vals = [m[key] for m in ms if isinstance(m.get(key), (int, float))]
            return sum(vals) / len(vals) if vals else float("nan")

        cut = [unfinished.get(s, [0, 0]) for s in range(lo, hi + 1)]
        total = sum(c[1] for c in cut)
        stretch = sum(m.get("stretch_problems") or 0 for m in ms)
        stretch_right = sum(m.get("stretch_solved") or 0 for m in ms)
        print(f"| {lo}-{hi} | {len(rows)} | {len(multi) / len(rows) if rows else float('nan'):.3f} "
              f"| {sum(solved) / len(solved) if solved else float('nan'):.3f} | {stretch} ({stretch_right}) "
              f"| {mean('teacher_reward_mean'):.2f} | {mean('solve_rate_mean'):.2f} "
              f"| {mean('solution_tokens_mean'):.0f} | {sum(c[0] for c in cut) / total if total else float('nan'):.2f} "
              f"| {mean('seconds_step'):.0f} ({mean('seconds_stretch'):.0f}) "
              f"| {sum(bare) / len(bare) if bare else float('nan'):.2f} ({sum(bare)} of {len(bare)}) "
              f"| {sum(right) / len(right) if right else float('nan'):.3f} |")
    if args.classes:
        print_classes(problems, wrong, first8, last, args.block)


def print_classes(problems: list, wrong: dict[int, bool | None], first8: dict[int, list[float]], last: int,
                  block: int) -> None:
    """Per block, each class's problems and their first-8 solve rate (right labels only)."""
    classes = [(o, d) for o in (1, 2, 3) for d in (1, 2, 3)]
    name = lambda o, d: f"{o}{'+' if o == 3 else ''}-op, {d}{'+' if d == 3 else ''}-digit"  # noqa: E731
    print()
    print("| steps | " + " | ".join(name(o, d) for o, d in classes) + " | multi-op, 2+-digit: solved (rate x n) |")
    print("|---|" + "---|" * (len(classes) + 1))
    for lo in range(0, last + 1, block):
        rates: dict[tuple[int, int], list[float]] = {c: [] for c in classes}
        for pid, step, text, extra, _reward, _label in problems:
            if not lo <= step < lo + block or wrong[pid] or not first8.get(pid):
                continue
            ops, digits = computation(text, (json.loads(extra or "{}")).get("program"))
            if ops and digits:
                rates[(min(ops, 3), min(digits, 3))].append(sum(first8[pid]) / len(first8[pid]))
        cells = [f"{sum(r) / len(r):.2f} ({len(r)})" if r else "-" for r in rates.values()]
        chains = [x for (o, d), r in rates.items() if o >= 2 and d >= 2 for x in r]  # arithmetic-medium's kind
        cells.append(f"{sum(chains):.1f} ({sum(chains) / len(chains):.3f} x {len(chains)})" if chains else "-")
        print(f"| {lo}-{lo + block - 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
