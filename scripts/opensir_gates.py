"""An OpenSIR run's RL-phase teacher outputs gate by gate, from its archive (RESULTS.md, sixth sitting).

    python scripts/opensir_gates.py runs/opensir-arith-s0 [more runs] [--block 10]

Shares parsed, labelled and admitted; the solve rates of labelled problems against windows; how often
the students' vote matched the executed answer; groups trained; the refusals by kind; and per block of
`--block` steps (from step 0, phase 0 included), the share of teacher outputs whose text is their
reference's (a copy, refused since method.refuse_copies; counted from `problems.parent_id`, so older
archives answer too), their distinct texts and the share admitted. A refusal reads
as "labelled" or "parsed" the way `minisir archive stats` reads it (archive_stats.gates_passed).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter

from minisir.archive_stats import gates_passed, reason_kind
from minisir.methods.opensir_prompts import NOT_NEW, repeats


def report(path: str, block: int = 10) -> None:
    """Print one run's gates over its RL phase (the steps after phase 0's pool steps)."""
    db = sqlite3.connect(f"file:{path}/archive.sqlite?mode=ro", uri=True)
    pool = [s for (s, m) in db.execute("SELECT step, metrics FROM steps") if json.loads(m).get("phase") == "pool"]
    first_rl = max(pool) + 1 if pool else 0
    rows = db.execute("SELECT valid, COALESCE(invalid_reason, ''), solve_rate, majority_correct FROM problems "
                      "WHERE role = 'teacher' AND step >= ?", (first_rl,)).fetchall()
    n = len(rows)
    passed = [gates_passed(r[0], r[1]) for r in rows]
    labelled = [r for r, (_, lab) in zip(rows, passed) if lab]
    parsed = [r for r, (par, _) in zip(rows, passed) if par]
    rates = [r[2] for r in labelled if r[2] is not None]
    audits = [r[3] for r in rows if r[3] is not None]
    steps = db.execute("SELECT COUNT(*) FROM steps WHERE step >= ?", (first_rl,)).fetchone()[0]
    teacher, student, seconds = db.execute(
        "SELECT SUM(json_extract(metrics, '$.teacher_groups_trained')), "
        "SUM(json_extract(metrics, '$.student_groups_trained')), AVG(json_extract(metrics, '$.seconds_step')) "
        "FROM steps WHERE step >= ?", (first_rl,)).fetchone()
    print(path, "RL steps", steps, "outputs", n, "parsed %.2f labelled %.2f admitted %.3f"
          % (len(parsed) / n, len(labelled) / n, sum(r[0] for r in rows) / n))
    print("  solve rates of labelled:", len(rates), "in [0.5,0.9]: %d, in [0.25,0.9]: %d, >0: %d, =0: %d" % (
        sum(0.5 <= x <= 0.9 for x in rates), sum(0.25 <= x <= 0.9 for x in rates), sum(x > 0 for x in rates),
        sum(x == 0 for x in rates)))
    print("  vote matched executed: %.2f of %d" % (sum(audits) / len(audits), len(audits)) if audits else "  no audit")
    print("  groups trained teacher/student:", teacher, student, "s a step %.0f" % seconds)
    print("  refusals:", Counter(reason_kind(r[1]) for r in rows if not r[0]).most_common(8))
    print_copies(db, block)


def print_copies(db: sqlite3.Connection, block: int) -> None:
    """Per block of steps: teacher outputs, copies of their reference, distinct texts, admitted."""
    blocks: dict[int, list] = {}
    for step, text, parent, valid, reason in db.execute(
            "SELECT c.step, c.text, p.text, c.valid, COALESCE(c.invalid_reason, '') FROM problems c "
            "LEFT JOIN problems p ON p.id = c.parent_id WHERE c.role = 'teacher'"):
        copy = (parent is not None and repeats(text or "", [parent])) or reason.startswith(NOT_NEW)
        blocks.setdefault(step // block, []).append((copy, text, valid))
    print("  steps: outputs, copies of their reference, distinct texts, admitted")
    for b in sorted(blocks):
        rows = blocks[b]
        print(f"    {b * block}-{b * block + block - 1}: {len(rows)}, {sum(r[0] for r in rows)}, "
              f"{len({r[1] for r in rows})}, {sum(r[2] for r in rows)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    size = 10
    if "--block" in args:
        i = args.index("--block")
        size, args = int(args[i + 1]), args[:i] + args[i + 2:]
    for run in args:
        try:
            report(run, size)
        except sqlite3.OperationalError as exc:  # a schema-1 archive has no label columns
            sys.exit(f"{run}: {exc}; run `minisir archive upgrade {run}` first")
