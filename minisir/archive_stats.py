"""What `minisir archive stats` and the report read from an archive: counts, averages, and how each
step's generated problems passed the gates from parsing to payment."""

from __future__ import annotations

import re

from .archive import Archive
from .archive_schema import SCHEMA_VERSION

# Refusals that come after a problem has its label: the rest come before it (parsing, "no label: ...").
AFTER_LABEL = ("leak", "solve rate", "majority differs", "no clear majority", "all rewards equal")
# Refusals of an output that parsed, before its label: its program gave none, or (OpenSIR's
# opensir_prompts.NOT_NEW) it repeats a problem its prompt showed.
BEFORE_LABEL = ("no label", "not new")


def gates_passed(valid: bool, reason: str) -> tuple[bool, bool]:
    """(parsed, labelled) for one generated problem, read from its valid flag and invalid_reason."""
    labelled = bool(valid) or reason.startswith(AFTER_LABEL)
    return labelled or reason.startswith(BEFORE_LABEL), labelled


def step_gates(archive: Archive) -> list[dict]:
    """Per step, how the generated problems (proposer/teacher rows) passed each gate, as shares
    of all outputs: parsed, labelled (its program ran and printed a label, or it needs none),
    valid (admitted: OpenSIR's window, SQLM's checks), paid (teacher reward > 0). Read from
    each row's invalid_reason, so archives from any version answer."""
    rows = archive.db.conn.execute(
        "SELECT step, valid, COALESCE(invalid_reason, ''), COALESCE(teacher_reward, 0) FROM problems "
        "WHERE role IN ('proposer', 'teacher') ORDER BY step").fetchall()
    out: dict[int, dict] = {}
    for step, valid, reason, reward in rows:
        g = out.setdefault(step, {"step": step, "outputs": 0, "parsed": 0, "labelled": 0, "valid": 0, "paid": 0})
        parsed, labelled = gates_passed(valid, reason)
        g["outputs"] += 1
        g["parsed"] += parsed
        g["labelled"] += labelled
        g["valid"] += bool(valid)
        g["paid"] += reward > 0
    return list(out.values())


# A refusal's specifics (which numbers, which name, the line of a traceback) stay in the archive; the
# stats group refusals by kind, so 40 "program leaves 7 of the problem unused" lines read as one.
_REASON_KINDS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"(program failed: \w+)(?::.*)?$"), r"\1"),
    (re.compile(r"program leaves .+ of the problem unused$"), "program leaves a number of the problem unused"),
    (re.compile(r"program uses .+, which the problem never states$"), "program uses a number the problem never states"),
    (re.compile(r"program uses .+ more often than the problem states it$"),
     "program uses a number more often than the problem states it"),
    (re.compile(r"program printed a number too large to check .*$"), "program printed a number too large to check"),
    (re.compile(r"program gives .+, but the problem's .+ is .+$"), "program gives another value than the problem's expression"),
    (re.compile(r"the problem's expression .+ does not evaluate$"), "the problem's expression does not evaluate"),
    (re.compile(r"program printed \d+ characters .*$"), "program printed too long an output"),
)


def reason_kind(reason: str) -> str:
    """A refusal without its specifics: the exception's name, not its message; "a number", not which."""
    for pattern, kind in _REASON_KINDS:
        reason = pattern.sub(kind, reason)
    return reason


def stats(archive: Archive) -> dict:
    """Counts and averages for `minisir archive stats`."""
    c = archive.db.conn
    one = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
    n_problems = one("SELECT COUNT(*) FROM problems")
    n_valid = one("SELECT COUNT(*) FROM problems WHERE valid = 1")
    reasons: dict[str, int] = {}
    for reason, n in c.execute("SELECT COALESCE(invalid_reason, '?'), COUNT(*) FROM problems WHERE valid = 0 "
                               "GROUP BY 1"):
        kind = reason_kind(reason)
        reasons[kind] = reasons.get(kind, 0) + n
    reasons = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "path": str(archive.path),
        "schema_version": SCHEMA_VERSION,
        "steps": one("SELECT COUNT(*) FROM steps"),
        "last_step": archive.last_step(),
        "problems": n_problems,
        "valid_problems": n_valid,
        "invalid_reasons": reasons,
        "solutions": one("SELECT COUNT(*) FROM solutions"),
        "adapters": one("SELECT COUNT(*) FROM adapters"),
        "with_embedding": one("SELECT COUNT(*) FROM problems WHERE embedding IS NOT NULL"),
        "mean_solve_rate": one("SELECT AVG(solve_rate) FROM problems WHERE valid = 1"),
        "mean_teacher_reward": one("SELECT AVG(teacher_reward) FROM problems WHERE valid = 1"),
        "mean_diversity": one("SELECT AVG(diversity) FROM problems WHERE valid = 1"),
        "solution_agreement": one("SELECT AVG(agrees) FROM solutions WHERE agrees IS NOT NULL"),
    }
