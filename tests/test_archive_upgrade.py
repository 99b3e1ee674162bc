"""Schema 1 -> 2: the label's fields become columns. tests/data/archive-v1.sql is a real schema-1
archive as SQL (step 0 of an SQLM executed-label run, pruned to 7 problems and their solutions)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from minisir.archive import Archive
from minisir.archive_schema import LABEL_COLUMNS, SCHEMA_VERSION
from minisir.browse import QUERIES, archive_path
from minisir.cli import main
from minisir.errors import ArchiveError
from minisir.share import problem_rows

V1 = Path(__file__).parent / "data" / "archive-v1.sql"


@pytest.fixture
def v1(tmp_path) -> Path:
    """The schema-1 archive file, built from its SQL dump (a database file is not kept in git)."""
    run = tmp_path / "run"
    run.mkdir()
    conn = sqlite3.connect(run / "archive.sqlite")
    try:
        conn.executescript(V1.read_text())
    finally:
        conn.close()
    return run / "archive.sqlite"


def _old_rows(path: Path) -> dict[int, dict]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {pid: json.loads(extra or "{}") for pid, extra in conn.execute("SELECT id, extra FROM problems")}


def test_opening_a_v1_archive_moves_the_label_fields_into_columns_and_keeps_a_backup(v1):
    old = _old_rows(v1)
    assert sum("label" in e for e in old.values()) == 5 and sum("label" not in e for e in old.values()) == 2
    with Archive.open(v1) as arc:
        rows = {pid: arc.problem(pid) for pid in old}
        assert arc.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    for pid, extra in old.items():
        row = rows[pid]
        for column in LABEL_COLUMNS:
            assert row[column] == extra.get(column), (pid, column)
            assert column not in (row["extra"] or {})
        kept = {k: v for k, v in extra.items() if k not in LABEL_COLUMNS}
        assert (row["extra"] or {}) == kept  # program, executed_source, ... stay where they were
    backup = v1.with_name("archive.sqlite.v1.bak")
    assert _old_rows(backup) == old
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_the_upgraded_archive_takes_the_next_step_and_reads_through_its_columns(v1):
    """Resuming: the same recipe is accepted and step 1 commits typed label fields; the export, the
    browser's canned queries and its path check read the columns."""
    with Archive.open(v1) as arc:
        recipe = arc.run_info()["recipe"]
        arc.ensure_run(recipe, {}, seed=recipe["run"]["seed"])
        arc.commit_step({"step": 1}, [{"key": "1-0", "text": "What is 2 + 2?", "role": "proposer", "valid": True,
                                       "label": "4", "label_source": "executed", "executed_answer": "4",
                                       "majority_correct": False, "program": "print(2 + 2)"}], [], None)
        new = arc.step_problems(1)[0]
        assert (new["label"], new["majority_correct"]) == ("4", False)
        assert arc.problem(new["id"])["extra"] == {"program": "print(2 + 2)"}
        exported = {r["id"]: r for r in problem_rows(arc)}
    assert exported[1]["label"] == "10" and exported[1]["label_source"] == "executed"
    assert exported[1]["majority_correct"] is True and exported[3]["majority_correct"] is False
    assert archive_path(v1.parent) == v1
    with sqlite3.connect(v1) as conn:
        audit = conn.execute(QUERIES["label_audit"]["sql"]).fetchall()
        best = conn.execute(QUERIES["best_problems"]["sql"]).fetchall()
    assert audit == [(0, 5, 2, 0.4), (1, 1, 0, 0.0)]
    assert best and all(row[4] is not None for row in best)


def test_a_v1_archive_opened_read_only_is_refused_in_one_line_and_untouched(v1):
    before = v1.read_bytes()
    with pytest.raises(ArchiveError) as err:
        Archive.open(v1, readonly=True)
    assert "minisir archive upgrade" in str(err.value) and "\n" not in str(err.value)
    assert v1.read_bytes() == before and not v1.with_name("archive.sqlite.v1.bak").exists()


def test_a_failed_upgrade_leaves_the_archive_at_schema_1(v1):
    """Forced: the file already has a `label` column (another tool added it), so ADD COLUMN fails;
    the one transaction rolls back and every value stays where it was."""
    with sqlite3.connect(v1) as conn:
        conn.execute("ALTER TABLE problems ADD COLUMN majority_correct INTEGER")
    old = _old_rows(v1)
    with pytest.raises(ArchiveError):
        Archive.open(v1)
    with sqlite3.connect(f"file:{v1}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "label" not in [c[1] for c in conn.execute("PRAGMA table_info(problems)")]
    assert _old_rows(v1) == old


def test_minisir_archive_upgrade_says_what_it_did(v1):
    first = CliRunner().invoke(main, ["archive", "upgrade", str(v1.parent)])
    assert first.exit_code == 0 and "upgraded from schema 1 to 2" in first.output and ".v1.bak" in first.output
    again = CliRunner().invoke(main, ["archive", "upgrade", str(v1.parent)])
    assert again.exit_code == 0 and "already has schema 2" in again.output
    missing = CliRunner().invoke(main, ["archive", "upgrade", str(v1.parent / "archive.sqlite.v1.bak") + "x"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
