"""`minisir archive export`: a real archive's valid problems, read back by `datasets` as they are.

The expected rows come from the SQLite file itself (plain sqlite3, a recursive CTE for the
lineage), not from minisir's own reader.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from minisir.archive import Archive
from minisir.cli import main

RECIPE = {"model": {"gguf": "bundled"}, "method": {"name": "opensir"}, "run": {"dir": "x", "steps": 2}}


def _sol(key: str, answer: str, agrees: bool, text: str | None = None) -> dict:
    return {"problem_key": key, "text": text or f"So the answer is \\boxed{{{answer}}}.", "answer": answer,
            "agrees": agrees, "reward": 1.0 if agrees else 0.0, "n_tokens": 9}


def build_archive(run_dir: Path) -> Path:
    """Two steps of problems with every kind of label an archive holds, lineage three deep,
    an invalid problem, and agreeing and disagreeing solutions."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with Archive.open(run_dir) as arc:
        arc.ensure_run(RECIPE, {}, seed=0)
        ids = arc.commit_step({"step": 0, "valid_rate": 0.5}, [
            {"key": "seed", "text": "What is 1+1?", "role": "seed", "method": "opensir", "valid": True},
            {"key": "a", "parent_key": "seed", "text": "Tom has 3 pens and buys 1 more. How many pens?",
             "concepts": ["addition", "counting"], "role": "teacher", "method": "opensir", "valid": True,
             "majority_answer": "4", "solve_rate": 0.75, "n_samples": 4, "teacher_reward": 1.1,
             "embedding": [0.1, 0.2, 0.3]},  # an archive from before executed labels: no label fields
            {"key": "bad", "parent_key": "seed", "text": None, "role": "teacher", "valid": False,
             "invalid_reason": "missing </problem>", "teacher_reward": 0.0},
        ], [_sol("a", "4", True), _sol("a", "4", True), _sol("a", "4", True), _sol("a", "5", False)])
        a = ids["a"]
        arc.commit_step({"step": 1}, [
            {"key": "b", "parent_id": a, "text": "Ein Stift kostet 3 €. Was kosten 7 Stifte?", "concepts": ["money"],
             "role": "teacher", "method": "opensir", "valid": True, "majority_answer": "20", "solve_rate": 0.5,
             "n_samples": 4, "teacher_reward": 0.8, "label": "21", "label_source": "executed",
             "executed_answer": "21", "majority_correct": False, "program": "print(3 * 7)"},
            {"key": "c", "parent_key": "b", "text": "What is 12 * 12?", "role": "teacher", "method": "opensir",
             "valid": True, "majority_answer": "144", "solve_rate": 1.0, "n_samples": 2, "teacher_reward": 0.2,
             "label": "144", "label_source": "majority", "executed_answer": "144", "majority_correct": True},
            {"key": "q", "text": "What is 9 - 4?", "role": "question", "method": "rlvr", "valid": True,
             "majority_answer": "5", "solve_rate": 0.25, "n_samples": 4, "label": "5", "label_source": "known"},
        ], [_sol("b", "21", True, "3 * 7 = 21, \\boxed{21}"), _sol("b", "20", False), _sol("b", "20", False),
            _sol("b", "21", True), _sol("c", "144", True), _sol("c", "144", True),
            _sol("q", "5", True), _sol("q", "6", False), _sol("q", "6", False), _sol("q", "7", False)])
    return run_dir / "archive.sqlite"


def expected_rows(db: Path, low: float | None = None, high: float | None = None) -> list[dict]:
    """What an export must hold, straight from SQLite."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        where = "valid = 1" + (f" AND solve_rate >= {low}" if low is not None else "") + \
            (f" AND solve_rate <= {high}" if high is not None else "")
        rows = conn.execute(
            "SELECT id, text, CASE WHEN label_source IS NOT NULL THEN label ELSE majority_answer END, "
            "CASE WHEN label_source IS NOT NULL THEN label_source "
            "WHEN majority_answer IS NOT NULL THEN 'majority' END, "
            "executed_answer, majority_correct, solve_rate, "
            f"parent_id, step, concepts FROM problems WHERE {where} ORDER BY id").fetchall()
        out = []
        for pid, text, label, source, executed, correct, rate, parent, step, concepts in rows:
            lineage = [r[0] for r in conn.execute(
                "WITH RECURSIVE up(id, depth) AS (SELECT parent_id, 1 FROM problems WHERE id = ? "
                "UNION ALL SELECT p.parent_id, depth + 1 FROM problems p JOIN up ON p.id = up.id "
                "WHERE p.parent_id IS NOT NULL) SELECT id FROM up WHERE id IS NOT NULL ORDER BY depth", (pid,))]
            agreeing = [r[0] for r in conn.execute(
                "SELECT text FROM solutions WHERE problem_id = ? AND agrees = 1 ORDER BY id", (pid,))]
            out.append({"id": pid, "problem": text, "label": label, "label_source": source,
                        "executed_answer": executed, "majority_correct": None if correct is None else bool(correct),
                        "solve_rate": rate, "parent_id": parent, "step": step, "lineage": lineage,
                        "solutions": agreeing, "concepts": json.loads(concepts) if concepts else None})
        return out
    finally:
        conn.close()


def load(path: Path, cache: Path) -> list[dict]:
    """The file through datasets.load_dataset, as a user would read it."""
    import datasets

    kind = "json" if path.suffix == ".jsonl" else "parquet"
    ds = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(cache))
    return [dict(r) for r in ds]


def _export(*args: str):
    return CliRunner().invoke(main, ["archive", "export", *args])


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_reads_back_with_datasets(tmp_path, suffix):
    db = build_archive(tmp_path / "run")
    want = expected_rows(db)
    assert {r["label_source"] for r in want} == {"majority", "executed", "known", None}  # the archive covers them all
    assert max(len(r["lineage"]) for r in want) == 3  # c -> b -> a -> seed
    out = tmp_path / f"problems{suffix}"
    result = _export(str(tmp_path / "run"), str(out))
    assert result.exit_code == 0, result.output
    assert f"{len(want)} problem(s) written" in result.stdout
    got = load(out, tmp_path / "hf")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for field, value in w.items():
            if field == "solve_rate" and value is not None:
                assert g[field] == pytest.approx(value)
            else:
                assert g[field] == value, (w["id"], field, g[field], value)
    by_id = {g["id"]: g for g in got}
    b = next(w for w in want if w["label_source"] == "executed")
    assert by_id[b["id"]]["label"] == "21" and by_id[b["id"]]["majority_answer"] == "20"  # the label is not the vote
    assert "€" in by_id[b["id"]]["problem"]
    assert not any(g["problem"] is None for g in got)  # the invalid problem is left out


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_solve_rate_filters(tmp_path, suffix):
    db = build_archive(tmp_path / "run")
    out = tmp_path / f"mid{suffix}"
    result = _export(str(tmp_path / "run"), str(out), "--min-solve", "0.5", "--max-solve", "0.75")
    assert result.exit_code == 0, result.output
    want = [r["id"] for r in expected_rows(db, 0.5, 0.75)]
    assert len(want) == 2  # 0.5 and 0.75 are inside (inclusive); 0.25, 1.0 and the unscored seed are not
    assert [g["id"] for g in load(out, tmp_path / "hf")] == want
    result = _export(str(tmp_path / "run"), str(tmp_path / f"hard{suffix}"), "--max-solve", "0.3")
    assert [g["id"] for g in load(tmp_path / f"hard{suffix}", tmp_path / "hf")] == [r["id"] for r in expected_rows(db, None, 0.3)]


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_user_mistakes_are_one_line_and_leave_no_file(tmp_path):
    build_archive(tmp_path / "run")
    out = tmp_path / "p.jsonl"
    _one_line_error(_export(str(tmp_path / "nowhere"), str(out)), "nowhere", "minisir run")
    _one_line_error(_export(str(tmp_path / "run"), str(tmp_path / "p.csv")), "p.csv", ".jsonl or .parquet")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "archive.sqlite").write_bytes(b"not a database at all\n" * 20)
    _one_line_error(_export(str(broken), str(out)), str(broken / "archive.sqlite"), "not an SQLite file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "run"]  # no output, no temp file


def test_a_failed_export_keeps_the_old_file(tmp_path, monkeypatch):
    from minisir import share
    from minisir.errors import ArchiveError

    build_archive(tmp_path / "run")
    real = share.problem_rows

    def fails_midway(*args, **kwargs):
        rows = real(*args, **kwargs)
        yield next(rows)
        raise ArchiveError("archive went away midway")

    monkeypatch.setattr(share, "problem_rows", fails_midway)
    for suffix in (".jsonl", ".parquet"):
        out = tmp_path / f"old{suffix}"
        out.write_text("the previous export\n")
        _one_line_error(_export(str(tmp_path / "run"), str(out)), "midway")
        assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl", "old.parquet", "run"]
