"""Unusable archives through the real `minisir run`: exit 2, one line, file bytes unchanged.

The refusal must come before any model loads (`minisir.loop.Sampler` is a tripwire here),
and must never "repair" the file: a user's only copy of a run stays exactly as it was.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import minisir.loop
from minisir.archive import ARCHIVE_NAME, Archive
from minisir.archive_schema import SCHEMA_VERSION
from minisir.cli import main
from minisir.recipe import load_recipe
from tiny_run import TINY

def _recipe_file(tmp_path: Path, run_dir: Path, **method) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"]["dir"] = str(run_dir)
    data["method"].update(method)
    path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _real_archive(tmp_path: Path, run_dir: Path, steps: int = 3, **method) -> Path:
    """A healthy archive of `recipe` (optionally with other method params), several pages long."""
    cfg = load_recipe(_recipe_file(tmp_path, run_dir, **method))
    rng = np.random.default_rng(0)
    with Archive.open(run_dir / ARCHIVE_NAME) as arc:
        arc.ensure_run(cfg.resolved(), {"minisir": "test"}, seed=0)
        for step in range(steps):
            problems = [{"key": f"p{i}", "text": f"problem {step}.{i} " + "x" * 800, "concepts": ["a"],
                         "valid": True, "embedding": rng.standard_normal(384).astype(np.float32)}
                        for i in range(8)]
            solutions = [{"problem_key": f"p{i}", "text": "\\boxed{2} " + "y" * 500, "answer": "2",
                          "agrees": True, "reward": 1.0} for i in range(8) for _ in range(2)]
            arc.commit_step({"step": step, "loss": 0.1}, problems, solutions, None)
    return run_dir / ARCHIVE_NAME


def _corrupt(tmp_path: Path, run_dir: Path) -> Path:
    path = _real_archive(tmp_path, run_dir)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    # Keep the header page, scribble over the b-tree pages after it.
    junk = np.random.default_rng(1).integers(0, 256, size=len(data) - page, dtype=np.uint8).tobytes()
    data[page:] = junk
    path.write_bytes(bytes(data))
    return path


def _truncated(tmp_path: Path, run_dir: Path) -> Path:
    path = _real_archive(tmp_path, run_dir)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    return path


def _not_sqlite(tmp_path: Path, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    path = run_dir / ARCHIVE_NAME
    path.write_text("these are my notes, not a database\n" * 50)
    return path


def _foreign_sqlite(tmp_path: Path, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    path = run_dir / ARCHIVE_NAME
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('holiday.jpg')")
    conn.commit()
    conn.close()
    return path


def _newer_schema(tmp_path: Path, run_dir: Path) -> Path:
    path = _real_archive(tmp_path, run_dir, steps=1)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    return path


def _other_recipe(tmp_path: Path, run_dir: Path) -> Path:
    return _real_archive(tmp_path, run_dir, steps=1, teacher_samples=4, solve_high=0.95)


CASES: list[tuple[str, Callable[[Path, Path], Path], list[str]]] = [
    ("corrupt", _corrupt, ["corrupt"]),
    ("truncated", _truncated, ["truncated"]),
    ("not-sqlite", _not_sqlite, ["not"]),
    ("foreign-sqlite", _foreign_sqlite, ["not a minisir archive"]),
    ("newer-schema", _newer_schema, [f"schema {SCHEMA_VERSION + 1}", "upgrade minisir"]),
    ("other-recipe", _other_recipe, ["different recipe", "method.teacher_samples", "method.solve_high"]),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case_id, make, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_archive_refused_untouched(tmp_path, no_model_loading, case_id, make, expected):
    run_dir = tmp_path / "run"
    archive = make(tmp_path, run_dir)
    before = _sha(archive)
    side_files = {p.name for p in run_dir.iterdir()}
    recipe = _recipe_file(tmp_path, run_dir)  # the default method params

    for attempt in range(2):  # a second try sees the same file and the same answer
        result = CliRunner().invoke(main, ["run", str(recipe)])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
        assert "Traceback" not in result.stderr + result.stdout
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ") and str(archive) in lines[0]
        for part in expected:
            assert part in lines[0], (part, lines[0])
        assert "run.dir" in lines[0] or "upgrade minisir" in lines[0], lines[0]  # says how to go on
        assert _sha(archive) == before, f"{case_id}: the archive bytes changed (attempt {attempt})"
    # No SQLite side files (-wal/-shm/-journal) left next to the refused file.
    left = {p.name for p in run_dir.iterdir()} - side_files - {".lock"}
    assert not left, left


def test_matching_recipe_is_accepted(tmp_path, monkeypatch):
    """Control: the same archive with the same recipe passes the archive checks and gets
    as far as loading the model (the tripwire), so the refusals above are not accidents."""
    run_dir = tmp_path / "run"
    _real_archive(tmp_path, run_dir, steps=1)
    reached = []

    def tripwire(*args, **kwargs):
        reached.append(args)
        raise AssertionError("model load reached")

    monkeypatch.setattr(minisir.loop, "Sampler", tripwire)
    result = CliRunner().invoke(main, ["run", str(_recipe_file(tmp_path, run_dir))])
    assert reached and isinstance(result.exception, AssertionError)
    # A failed start releases the run-dir lock, so the same process can try again.
    from minisir.run_dir import lock_run_dir

    lock_run_dir(run_dir).close()


def test_second_process_on_same_run_dir_refused(tmp_path, no_model_loading):
    """Two runs on one directory would interleave steps: the second is refused (exit 2)."""
    from minisir.run_dir import lock_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recipe = _recipe_file(tmp_path, run_dir)
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path; from minisir.run_dir import lock_run_dir; "
                               f"lock = lock_run_dir(Path({str(run_dir)!r})); print('locked', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(main, ["run", str(recipe)])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.stderr
        assert "in use by another minisir process" in lines[0] and str(holder.pid) in lines[0]
    finally:
        holder.kill()
        holder.wait()
    # The OS dropped the lock with the process: the directory is usable again.
    lock_run_dir(run_dir).close()


def test_a_run_started_before_a_knob_existed_still_resumes(tmp_path):
    """The stored recipe lacks a method field minisir added since (its default is what the run
    used): resume accepts it, and still refuses a real change. Without re-reading the stored
    section with today's defaults, every SQLM run was refused after the curriculum knobs came."""
    from minisir.archive import Archive
    from minisir.errors import ArchiveError
    from minisir.recipe import current_defaults, parse_recipe

    recipe = parse_recipe({"method": {"name": "sqlm", "labels": "program", "topic": "arithmetic"}})
    old = recipe.resolved()
    del old["method"]["curriculum_examples"], old["method"]["curriculum_window"]  # as an older minisir stored it
    arc = Archive.open(tmp_path / "run")
    try:
        arc.ensure_run(old, {"minisir": "old"}, seed=0)
        arc.ensure_run(recipe.resolved(), {"minisir": "new"}, seed=0, upgrade=current_defaults)
        with pytest.raises(ArchiveError, match="method.curriculum_examples"):
            arc.ensure_run(recipe.resolved(), {"minisir": "new"}, seed=0)  # compared as stored: refused
        changed = parse_recipe({"method": {"name": "sqlm", "labels": "program", "topic": "arithmetic",
                                           "curriculum_examples": 2}})
        with pytest.raises(ArchiveError, match="method.curriculum_examples"):
            arc.ensure_run(changed.resolved(), {"minisir": "new"}, seed=0, upgrade=current_defaults)
    finally:
        arc.close()


@pytest.mark.parametrize("key, change", [
    ("run.seed", {"run": {"seed": 8}}),
    ("run.rounds_per_step", {"run": {"rounds_per_step": 3}}),
    ("trainer.lora_alpha", {"trainer": {"lora_alpha": 64}}),
    ("trainer.lora_rank", {"trainer": {"lora_rank": 8}}),
])
def test_resume_refuses_a_change_to_what_the_saved_state_means(tmp_path, key, change, caplog):
    """A changed seed re-draws every random stream, rounds shift rlvr's question index, and a changed
    LoRA alpha silently rescales the saved adapter: refused with one line naming the key, unless forced."""
    from minisir.archive import Archive
    from minisir.errors import ArchiveError
    from minisir.recipe import current_defaults, parse_recipe

    base = {"method": {"name": "sqlm", "labels": "program", "topic": "arithmetic"},
            "run": {"seed": 7, "rounds_per_step": 2}, "trainer": {"lora_rank": 16, "lora_alpha": 32}}
    edited = {k: {**v, **change.get(k, {})} if isinstance(v, dict) else v for k, v in base.items()}
    then, now = parse_recipe(base), parse_recipe(edited)
    arc = Archive.open(tmp_path / "run")
    try:
        arc.ensure_run(then.resolved(), {}, seed=7)
        arc.ensure_run(then.resolved(), {}, seed=7, upgrade=current_defaults)  # unchanged: resumes
        with pytest.raises(ArchiveError, match=key.replace(".", r"\.")) as err:
            arc.ensure_run(now.resolved(), {}, seed=now.run.seed, upgrade=current_defaults)
        assert "--force-config" in str(err.value) and "\n" not in str(err.value)
        with caplog.at_level("WARNING"):
            arc.ensure_run(now.resolved(), {}, seed=now.run.seed, upgrade=current_defaults, force=True)
        assert key in caplog.text
    finally:
        arc.close()
