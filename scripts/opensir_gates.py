"""An OpenSIR run's RL-phase teacher outputs gate by gate, from its archive (RESULTS.md, sixth sitting).

    python scripts/opensir_gates.py runs/opensir-arith-s0 [more runs]

Shares parsed, labelled and admitted; the solve rates of labelled problems against windows; how often
the students' vote matched the executed answer; groups trained; the refusals by kind.
"""
import sqlite3, sys, json
from collections import Counter
from minisir.archive_stats import reason_kind
for path in sys.argv[1:]:
    db = sqlite3.connect(f"file:{path}/archive.sqlite?mode=ro", uri=True)
    pool = [s for (s, m) in db.execute("select step, metrics from steps") if json.loads(m).get("phase") == "pool"]
    first_rl = max(pool) + 1 if pool else 0
    rows = db.execute("select valid, coalesce(invalid_reason,''), solve_rate, majority_correct from problems "
                      "where role='teacher' and step>=?", (first_rl,)).fetchall()
    n = len(rows)
    after = ("leak", "solve rate", "majority differs", "no clear majority", "all rewards equal")
    labelled = [r for r in rows if r[0] or r[1].startswith(after)]
    parsed = [r for r in rows if r[0] or r[1].startswith(after) or r[1].startswith("no label")]
    sr = [r[2] for r in labelled if r[2] is not None]
    mc = [r[3] for r in rows if r[3] is not None]
    steps = db.execute("select count(*) from steps where step>=?", (first_rl,)).fetchone()[0]
    tg = db.execute("select sum(json_extract(metrics,'$.teacher_groups_trained')), sum(json_extract(metrics,'$.student_groups_trained')), avg(json_extract(metrics,'$.seconds_step')) from steps where step>=?", (first_rl,)).fetchone()
    print(path, "RL steps", steps, "outputs", n, "parsed %.2f labelled %.2f admitted %.3f" % (len(parsed)/n, len(labelled)/n, sum(r[0] for r in rows)/n))
    print("  solve rates of labelled:", len(sr), "in [0.5,0.9]: %d, in [0.25,0.9]: %d, >0: %d, =0: %d" % (
        sum(0.5 <= x <= 0.9 for x in sr), sum(0.25 <= x <= 0.9 for x in sr), sum(x > 0 for x in sr), sum(x == 0 for x in sr)))
    print("  vote matched executed: %.2f of %d" % (sum(mc)/len(mc), len(mc)) if mc else "  no audit")
    print("  groups trained teacher/student:", tg[0], tg[1], "s a step %.0f" % tg[2])
    print("  refusals:", Counter(reason_kind(r[1]) for r in rows if not r[0]).most_common(8))
