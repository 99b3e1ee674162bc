"""What stopping a problem's solver samples early would have saved and lost, read from archives.

    python scripts/early_stop.py runs/s19-loops runs/s7-60 [--after 4] [--of 8]

Problem-level dynamic sampling (#27): sample `--after` answers to each proposed problem first and
stop there when all of them are wrong. From each archived group's first `--of` solver samples, in the
order they were drawn (solution id; stretch samples come after them): the share of solver tokens the
stop would have saved, and the share of groups with spread (something to train on) it would have
lost. Both are read from samples that were really drawn, so the figures need no model.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--after", type=int, default=4, help="samples drawn before the stop is decided")
    ap.add_argument("--of", type=int, default=8, help="samples a group has without the stop (solver_samples)")
    args = ap.parse_args()
    print(f"| run | groups | with spread | lost by stopping after {args.after} wrong | solver tokens saved |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        db = sqlite3.connect(f"file:{run / 'archive.sqlite'}?mode=ro", uri=True)
        groups: dict[int, list[tuple[bool, int]]] = {}
        for pid, reward, tokens in db.execute(
                "SELECT s.problem_id, s.reward, s.n_tokens FROM solutions s JOIN problems p ON p.id = s.problem_id "
                "WHERE p.role = 'proposer' ORDER BY s.id"):
            groups.setdefault(pid, []).append(((reward or 0) > 0, tokens or 0))
        full = [g[: args.of] for g in groups.values() if len(g) >= args.of]
        spread = [len({right for right, _ in g}) > 1 for g in full]
        stopped = [not any(right for right, _ in g[: args.after]) for g in full]
        tokens = sum(t for g in full for _, t in g)
        saved = sum(t for g, stop in zip(full, stopped) if stop for _, t in g[args.after:])
        lost = sum(s and stop for s, stop in zip(spread, stopped))
        print(f"| {run} | {len(full)} | {sum(spread)} | {lost} ({lost / max(sum(spread), 1):.2f}) "
              f"| {saved / tokens if tokens else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
