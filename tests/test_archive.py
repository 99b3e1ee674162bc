"""Archive on real SQLite files: atomic steps, resume, refusal of bad files/recipes."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from minisir.archive import Archive
from minisir.archive_stats import stats, step_gates
from minisir.embed import diversity_scores
from minisir.errors import ArchiveError

RECIPE = {
    "model": {"gguf": "bundled", "n_ctx": 2048},
    "method": {"name": "opensir", "solve_low": 0.5, "teacher_samples": 8},
    "trainer": {"lr": 1e-5},
    "run": {"dir": "runs/x", "steps": 10},
}


def _unit(rng, n, d=8):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _step(archive: Archive, step: int, rng, n_problems: int = 3, parent_id=None):
    probs = [
        {
            "key": f"p{i}",
            "text": f"problem {step}.{i}",
            "concepts": ["a", "b"],
            "parent_id": parent_id,
            "valid": i != 0,
            "invalid_reason": "missing </problem>" if i == 0 else None,
            "solve_rate": 0.625,
            "teacher_reward": 1.2,
            "embedding": _unit(rng, 1)[0] if i != 0 else None,
            "embed_model": "test",
        }
        for i in range(n_problems)
    ]
    sols = [
        {"problem_key": f"p{i}", "text": "... \\boxed{3}", "n_tokens": 10, "answer": "3", "agrees": True, "reward": 1.1}
        for i in range(1, n_problems)
        for _ in range(2)
    ]
    adapter = {"path": f"adapters/step{step}.gguf", "sha256": "ab" * 32}
    return archive.commit_step({"step": step, "loss": 0.5}, probs, sols, adapter)


def test_fresh_archive_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "archive.sqlite"
    with Archive.open(path) as arc:
        assert arc.last_step() == -1
        arc.ensure_run(RECIPE, {"minisir": "0.1.0"}, seed=0)
        ids = _step(arc, 0, rng)
        assert set(ids) == {"p0", "p1", "p2"}
        _step(arc, 1, rng, parent_id=ids["p1"])
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Archive.open(tmp_path) as arc:  # a run directory works too
        assert arc.last_step() == 1
        arc.ensure_run(RECIPE | {"trainer": {"lr": 3e-5}}, {"minisir": "0.1.1"}, seed=0)  # trainer may change
        counts = stats(arc)
        assert counts["steps"] == 2 and counts["problems"] == 6 and counts["valid_problems"] == 4
        assert counts["solutions"] == 8 and counts["adapters"] == 2
        assert counts["invalid_reasons"] == {"missing </problem>": 2}
        assert [s["step"] for s in arc.steps()] == [0, 1]
        assert arc.steps()[1]["metrics"] == {"loss": 0.5}
        assert arc.latest_adapter()["path"] == "adapters/step1.gguf"
        child = [p for p in arc.problems(limit=10) if p["step"] == 1 and p["valid"]][0]
        detail = arc.problem(child["id"])
        assert detail["concepts"] == ["a", "b"]
        assert [a["id"] for a in detail["lineage"]] == [ids["p1"]]
        assert len(detail["solutions"]) == 2 and detail["solutions"][0]["agrees"] is True
        assert len(arc.valid_problems()) == 4 and len(arc.valid_problems(limit=1)) == 1
        assert arc.valid_problems(limit=1)[0]["id"] == max(p["id"] for p in arc.valid_problems())
        assert len(arc.problems(limit=10, valid_only=True)) == 4
        with pytest.raises(ArchiveError, match="already committed"):
            _step(arc, 1, rng)


def test_commit_step_is_atomic(tmp_path):
    rng = np.random.default_rng(1)
    with Archive.open(tmp_path / "a.sqlite") as arc:
        _step(arc, 0, rng)
        before = stats(arc)
        matrix_before = arc.embedding_matrix()[0].copy()
        probs = [{"key": "ok", "text": "fine", "embedding": _unit(rng, 1)[0]}]
        bad_solutions = [{"problem_key": "ok", "text": "s"}, {"problem_key": "nope", "text": "s"}]
        with pytest.raises(ValueError, match="nope"):
            arc.commit_step({"step": 1}, probs, bad_solutions, {"path": "x.gguf"})
        assert stats(arc) == before
        assert arc.last_step() == 0
        np.testing.assert_array_equal(arc.embedding_matrix()[0], matrix_before)
        # a database-level failure (FK to a missing parent) rolls back too
        with pytest.raises(ArchiveError):
            arc.commit_step({"step": 1}, [{"key": "k", "text": "t", "parent_id": 999999}], [], None)
        assert stats(arc) == before
        # the archive is still usable afterwards
        _step(arc, 1, rng)
        assert arc.last_step() == 1


def test_parent_key_links_inside_one_commit(tmp_path):
    with Archive.open(tmp_path / "a.sqlite") as arc:
        ids = arc.commit_step(
            {"step": 0},
            [{"key": "seed", "text": "What is 1+1?", "role": "seed"}, {"key": "c", "text": "child", "parent_key": "seed"}],
            [],
            None,
        )
        assert arc.problem(ids["c"])["parent_id"] == ids["seed"]


def test_corrupt_and_foreign_files_refused_untouched(tmp_path):
    rng = np.random.default_rng(2)
    good = tmp_path / "good.sqlite"
    with Archive.open(good) as arc:
        for s in range(3):
            _step(arc, s, rng, n_problems=40)
    data = good.read_bytes()

    cases = {
        "text.sqlite": b"hello, this is not a database\n" * 10,
        "truncated.sqlite": data[: len(data) // 2],
        "garbled.sqlite": data[:4096] + bytes(len(data) - 4096),  # header ok, pages zeroed
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ArchiveError) as err:
            Archive.open(path)
        msg = str(err.value)
        assert name in msg and "\n" not in msg and "delete" in msg
        assert path.read_bytes() == content, f"{name} was modified"
        assert not (tmp_path / (name + "-wal")).exists()

    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    content = foreign.read_bytes()
    with pytest.raises(ArchiveError, match="not a minisir archive"):
        Archive.open(foreign)
    assert foreign.read_bytes() == content


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ArchiveError, match="newer"):
        Archive.open(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_recipe_mismatch_refused(tmp_path):
    path = tmp_path / "a.sqlite"
    with Archive.open(path) as arc:
        arc.ensure_run(RECIPE, {}, seed=0)
    other = dict(RECIPE)
    other["method"] = dict(RECIPE["method"], solve_low=0.4)
    other["model"] = dict(RECIPE["model"], gguf="other.gguf")
    with Archive.open(path) as arc:
        with pytest.raises(ArchiveError) as err:
            arc.ensure_run(other, {}, seed=0)
    msg = str(err.value)
    assert "method.solve_low" in msg and "model.gguf" in msg
    assert "run.dir" in msg and str(path) in msg


def test_readonly_open(tmp_path):
    with pytest.raises(ArchiveError):
        Archive.open(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    rng = np.random.default_rng(4)
    with Archive.open(tmp_path / "a.sqlite") as arc:
        _step(arc, 0, rng)
        with Archive.open(tmp_path / "a.sqlite", readonly=True) as ro:  # while the writer is open
            assert ro.last_step() == 0
            with pytest.raises(ArchiveError):
                ro.commit_step({"step": 1}, [], [], None)


def test_embedding_matrix_appended_and_reloaded(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "a.sqlite"
    with Archive.open(path) as arc:
        mat, ids = arc.embedding_matrix()
        assert mat.shape[0] == 0 and ids == []
        _step(arc, 0, rng)  # 2 embeddings (p0 has none)
        mat, ids = arc.embedding_matrix()
        assert mat.shape == (2, 8) and mat.dtype == np.float32 and len(ids) == 2
        for s in range(1, 20):  # forces the buffer to grow
            _step(arc, s, rng)
        mat, ids = arc.embedding_matrix()
        assert mat.shape == (40, 8) and ids == sorted(ids)
        kept = mat.copy()
    with Archive.open(path) as arc:
        mat2, ids2 = arc.embedding_matrix()
        np.testing.assert_array_equal(mat2, kept)
        assert ids2 == ids


def test_diversity_over_a_large_reference_is_the_direct_top_k_mean():
    """Chunked scoring over 50k reference rows gives what the definition gives, computed directly:
    (1 - mean of the top-k cosine similarities among the reference and the other new rows) / 2.
    (How long it takes is `minisir bench archive`'s question.)"""
    rng = np.random.default_rng(5)
    ref, new = _unit(rng, 50_000, 64), _unit(rng, 16, 64)
    new[3] = ref[123]  # a duplicate of a reference row
    sims = np.concatenate([new @ ref.T, new @ new.T], axis=1)
    for i in range(len(new)):
        sims[i, len(ref) + i] = -np.inf  # never its own neighbour
    direct = (1 - np.sort(sims, axis=1)[:, -5:].mean(axis=1)) / 2
    np.testing.assert_allclose(diversity_scores(new, ref, top_k=5), direct, atol=1e-5)


def test_valid_pool_by_position(tmp_path):
    rng = np.random.default_rng(0)
    with Archive.open(tmp_path / "archive.sqlite") as arc:
        _step(arc, 0, rng, n_problems=3)
        _step(arc, 1, rng, n_problems=3)
        assert arc.count_valid() == 4  # problem 0 of each step is invalid
        texts = [p["text"] for p in arc.valid_at([0, 3, 1])]
        assert texts == ["problem 0.1", "problem 1.2", "problem 0.2"]
        assert [p["text"] for p in arc.valid_problems()] == [p["text"] for p in arc.valid_at([0, 1, 2, 3])]


def test_per_step_gates_count_each_generated_problem_at_the_gate_it_stopped(tmp_path):
    """`minisir archive stats RUN --per-step`: of each step's generated problems, the shares that
    parsed, got a label, were valid and earned a reward; seeds and references are not outputs."""
    from click.testing import CliRunner

    from minisir.cli import main

    rows = [  # (role, valid, invalid_reason, teacher_reward)
        ("seed", 1, None, None),
        ("teacher", 0, "missing ```python block", 0.0),  # did not parse
        ("teacher", 0, "no label: program failed: NameError", -1.0),  # parsed, no label
        ("teacher", 0, "solve rate outside the window (0.00)", -0.5),  # labelled, not admitted
        ("teacher", 1, None, 0.8),  # admitted and paid
        ("teacher", 0, "not new: repeats a problem its prompt showed", -1.0),  # parsed, a copy: no label run
    ]
    with Archive.open(tmp_path) as arc:
        arc.commit_step({"step": 0}, [{"key": f"k{i}", "text": f"p{i}", "role": role, "valid": valid,
                                       "invalid_reason": why, "teacher_reward": reward}
                                      for i, (role, valid, why, reward) in enumerate(rows)], [])
        arc.commit_step({"step": 1}, [{"key": "q", "text": "q", "role": "proposer", "valid": 0,
                                       "invalid_reason": "leak: majority answer appears in the problem",
                                       "teacher_reward": 0.0}], [])
        assert step_gates(arc) == [
            {"step": 0, "outputs": 5, "parsed": 4, "labelled": 2, "valid": 1, "paid": 1},
            {"step": 1, "outputs": 1, "parsed": 1, "labelled": 1, "valid": 0, "paid": 0}]
    out = CliRunner().invoke(main, ["archive", "stats", str(tmp_path), "--per-step"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["step", "outputs", "parsed", "labelled", "valid", "rewarded"]
    assert lines[1].split() == ["0", "5", "0.80", "0.40", "0.20", "0.20"]
    assert lines[2].split() == ["1", "1", "1.00", "1.00", "0.00", "0.00"]


def test_stats_group_refusals_by_kind_and_keep_each_reason_in_the_archive(tmp_path):
    """Refusals that differ only in their specifics (the numbers left unused, the exception's message)
    count as one kind in `minisir archive stats`, most frequent first; the rows keep the full reason."""
    from click.testing import CliRunner

    from minisir.archive_stats import reason_kind
    from minisir.cli import main

    reasons = ["no label: program leaves 7 of the problem unused", "no label: program leaves 3, 40 of the problem unused",
               "no label: program leaves 2 of the problem unused", "no label: program failed: NameError: name 'x' "
               "is not defined", "no label: program failed: SyntaxError: invalid syntax",
               "no label: program failed: SyntaxError: '(' was never closed", "truncated",
               "no label: program uses 12, which the problem never states"]
    with Archive.open(tmp_path) as arc:
        arc.commit_step({"step": 0}, [{"key": f"k{i}", "text": f"p{i}", "role": "teacher", "valid": 0,
                                       "invalid_reason": why} for i, why in enumerate(reasons)], [])
        assert stats(arc)["invalid_reasons"] == {
            "no label: program leaves a number of the problem unused": 3,
            "no label: program failed: SyntaxError": 2,
            "no label: program failed: NameError": 1,
            "no label: program uses a number the problem never states": 1,
            "truncated": 1}
        kept = {r for (r,) in arc.db.conn.execute("SELECT invalid_reason FROM problems")}
    assert kept == set(reasons)
    assert reason_kind("program printed a number too large to check (1e999)") == \
        "program printed a number too large to check"
    assert reason_kind("no label: program gives 15, but the problem's 5 + (2 + 3) is 10") == \
        "no label: program gives another value than the problem's expression"
    assert reason_kind("no label: the problem's expression 2 * (4 + 1 does not evaluate") == \
        "no label: the problem's expression does not evaluate"
    assert reason_kind("no label: program uses 12, 5 more often than the problem states it") == \
        "no label: program uses a number more often than the problem states it"
    out = CliRunner().invoke(main, ["archive", "stats", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = [line.strip() for line in out.output.splitlines()]
    at = lines.index("invalid_reasons:")
    assert lines[at + 1].split(None, 1) == ["3", "no label: program leaves a number of the problem unused"]
    assert lines[at + 2].split(None, 1) == ["2", "no label: program failed: SyntaxError"]
