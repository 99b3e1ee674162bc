"""End to end on the bundled model (CPU): the run loop, its archive, resume after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from minisir.archive import Archive
from minisir.cli import main
from minisir.loop import Runner
from minisir.recipe import load_recipe
from tiny_run import FORCED, check_committed, force_valid_problem

TESTS = Path(__file__).resolve().parent

TINY = {
    "model": {"gguf": "bundled"},
    "sampler": {"n_ctx": 2048, "n_parallel": 6, "n_threads": 2},
    "method": {"name": "opensir", "references_per_step": 1, "teacher_samples": 3, "student_samples": 3,
               "teacher_max_tokens": 48, "student_max_tokens": 48, "length_cap": 48,
               "initial_pool": 0,
               # force_valid_problem writes the same problem every round; from the second step the pool
               # shows it, and the copy check (tests/test_opensir.py) would refuse it, so no step would train
               "refuse_copies": False},
    "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024},
    "run": {"steps": 2, "seed": 3, "eval_every": 2},
    "eval": {"benchmark": "arithmetic", "n_questions": 2, "k": 1, "max_tokens": 16, "greedy": False},
}


def write_recipe(path: Path, run_dir: Path, **run) -> Path:
    data = json.loads(json.dumps(TINY))
    data["run"].update({"dir": str(run_dir), **run})
    path.write_text(yaml.safe_dump(data))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """Two steps in which the teacher's first problem is a known valid one (tiny_run.force_valid_problem),
    so what a valid problem and a trained step leave in the archive does not depend on sampled text."""
    root = tmp_path_factory.mktemp("run")
    recipe = load_recipe(write_recipe(root / "r.yaml", root / "run"))
    with pytest.MonkeyPatch.context() as mp:
        force_valid_problem(mp)
        runner = Runner(recipe, progress=False)
        try:
            assert runner.run() == 2
        finally:
            runner.close()
    return root / "run"


def test_archive_holds_what_the_recipe_implies(finished_run):
    with Archive.open(finished_run, readonly=True) as arc:
        steps = arc.steps()
        assert [s["step"] for s in steps] == [0, 1]
        problems = arc.problems(limit=1000)
        seeds = [p for p in problems if p["role"] == "seed"]
        teacher = [p for p in problems if p["role"] == "teacher"]
        assert [p["text"] for p in seeds] == ["What is 1+1?"]
        assert len(teacher) == 2 * 1 * 3  # steps x references x teacher samples
        valid = [arc.problem(p["id"]) for p in teacher if p["valid"]]
        forced = [p for p in valid if p["text"] == FORCED["opensir"][0]]
        assert [p["step"] for p in forced] == [0, 1], "the known problem is valid in both steps"
        for p in forced:  # students answered 21, 21, 20: majority 21, solve rate 2/3
            assert p["majority_answer"] == "21" and p["solve_rate"] == pytest.approx(2 / 3)
            assert p["concepts"] == ["multiplication", "money"]
            assert [s["agrees"] for s in p["solutions"]] == [True, True, False]
        for p in teacher:
            if not p["valid"]:
                assert p["invalid_reason"], "invalid output is recorded with its reason"
            assert p["parent_id"] is not None, "every teacher problem has lineage"
        for p in valid:
            for term in ("solvability", "diversity", "length", "format", "solve_rate"):
                assert 0.0 <= p[term] <= 1.0, term
            assert p["embed_model"]
            assert len(p["solutions"]) == 3
            agree = [s["agrees"] for s in p["solutions"]]
            if p["majority_answer"] is not None:
                assert sum(agree) / p["n_samples"] == pytest.approx(p["solve_rate"])
        emb, ids = arc.embedding_matrix()
        assert sorted(ids) == sorted([p["id"] for p in valid] + [seeds[0]["id"]])
        assert emb.shape == (len(ids), 384)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
        for s in steps:
            m = s["metrics"]
            assert 1 / 3 <= m["valid_rate"] <= 1.0  # at least the known problem of 3
            assert m["seconds_teacher"] > 0 and m["teacher_tokens_per_s"] > 0
            # the known problem's students (rewards 1.1, 1.1, 0.1) are a trainable group: every step trains
            assert m["student_groups_trained"] == 1 and m["train_groups_used"] >= 1 and m["train_tokens"] > 0
            f = finished_run / s["adapter_path"]
            assert sha256(f) == s["adapter_sha256"]
        evals = arc.evals()
        # the base model first (the held-out curve's start), then eval_every=2 -> after step 1
        assert [(e["step"], e["benchmark"]) for e in evals] == [(None, "arithmetic"), (1, "arithmetic")]
        assert evals[0]["metrics"]["config"]["adapter"] is None and evals[1]["metrics"]["config"]["adapter"]
        run = arc.run_info()
        assert run["recipe"]["method"]["teacher_samples"] == 3
        assert run["recipe"]["trainer"]["learning_rate"] > 0, "defaults are resolved and stored"
        assert run["seed"] == 3
    check_committed(finished_run, 2)  # adapters on disk match, state/ holds the last trained step
    assert [p.name for p in (finished_run / "state").iterdir()] == ["step-000001"]


def test_rerunning_a_finished_run_adds_nothing(finished_run, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", finished_run))
    runner = Runner(recipe, progress=False)
    try:
        assert runner.run() == 0
    finally:
        runner.close()


def test_resume_rewrites_an_adapter_that_is_not_the_committed_file(finished_run, tmp_path):
    """The adapter on disk is checked against the sha256 its step committed before it is loaded; a
    damaged one is rewritten from the trainer's state, byte for byte what was committed."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    with Archive.open(run_dir, readonly=True) as arc:
        latest = arc.latest_adapter()
    path = run_dir / latest["path"]
    path.write_bytes(path.read_bytes()[:-64] + b"\0" * 64)  # damaged in place, same size
    assert sha256(path) != latest["sha256"]
    runner = Runner(load_recipe(write_recipe(tmp_path / "r.yaml", run_dir)), progress=False)
    try:
        assert runner.run() == 0
        assert runner.sampler.adapter_path == path
    finally:
        runner.close()
    assert sha256(path) == latest["sha256"]


def test_an_eval_lost_to_a_kill_after_the_commit_is_redone_on_resume(finished_run, tmp_path):
    """The in-run eval runs after its step commits; a kill in between leaves the step without its eval.
    Forced here by deleting the eval row, which is the archive such a kill leaves behind."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    with sqlite3.connect(run_dir / "archive.sqlite") as conn:
        conn.execute("DELETE FROM evals WHERE step = 1")
    runner = Runner(load_recipe(write_recipe(tmp_path / "r.yaml", run_dir)), progress=False)
    try:
        assert runner.run() == 0  # the run is finished: nothing to train, but the eval is owed
    finally:
        runner.close()
    with Archive.open(run_dir, readonly=True) as arc:
        assert [e["step"] for e in arc.evals()] == [None, 1]


def test_cli_refuses_a_recipe_that_conflicts_with_the_archive(finished_run, tmp_path):
    from click.testing import CliRunner

    path = write_recipe(tmp_path / "r.yaml", finished_run)
    data = yaml.safe_load(path.read_text())
    data["method"]["teacher_samples"] = 5
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert "method.teacher_samples" in result.output and "start fresh" in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_a_changed_lora_alpha_on_resume_unless_forced(finished_run, tmp_path):
    from click.testing import CliRunner

    path = write_recipe(tmp_path / "r.yaml", finished_run)
    data = yaml.safe_load(path.read_text())
    data["trainer"]["lora_alpha"] = 16  # would silently halve the saved adapter's scale
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "trainer.lora_alpha=8" in result.output and "--force-config" in result.output
    forced = CliRunner().invoke(main, ["run", str(path), "--force-config"])
    assert forced.exit_code == 0, forced.output  # the run is already finished: nothing more to do


def _committed_steps(archive: Path) -> list[int]:
    if not archive.exists():
        return []
    try:
        with sqlite3.connect(f"file:{archive}?mode=ro", uri=True, timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT step FROM steps ORDER BY step")]
    except sqlite3.OperationalError:
        return []


def test_resume_after_sigkill_in_the_middle_of_a_step(tmp_path):
    """Every step trains (the CLI runs with tiny_run.force_valid_problem, in tests/forced_cli.py), so the
    kill lands between two trained steps and the resumed run must continue from step 0's trainer state."""
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, steps=3)
    cmd = [sys.executable, str(TESTS / "forced_cli.py"), "run", str(recipe)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    archive = run_dir / "archive.sqlite"
    deadline = time.time() + 900
    while _committed_steps(archive) != [0] and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # step 1 has started: it samples for seconds before it can commit
    proc.wait()
    assert _committed_steps(archive) == [0]
    assert [p.name for p in (run_dir / "state").iterdir()] == ["step-000000"]  # step 0 trained
    with Archive.open(run_dir, readonly=True) as arc:
        before = [(p["id"], p["text"], p["teacher_reward"]) for p in arc.problems(limit=1000)]
        adapter0 = arc.steps()[0]["adapter_sha256"]
    assert adapter0

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr + done.stdout
    assert _committed_steps(archive) == [0, 1, 2]
    with Archive.open(run_dir, readonly=True) as arc:
        after = [(p["id"], p["text"], p["teacher_reward"]) for p in arc.problems(limit=1000)]
        assert after[: len(before)] == before, "committed problems survive untouched"
        steps = arc.steps()
        assert steps[0]["adapter_sha256"] == adapter0
        assert [e["step"] for e in arc.evals()] == [None, 1], "the base model is evaluated once, not on resume"
        for s in steps:
            assert sha256(run_dir / s["adapter_path"]) == s["adapter_sha256"]
        assert [p["step"] for p in arc.problems(limit=1000) if p["text"] == FORCED["opensir"][0] and p["valid"]] \
            == [0, 1, 2]
    assert [s["step"] for s in steps if s["adapter_path"]] == [0, 1, 2], "every step trained"
    assert len({s["adapter_sha256"] for s in steps}) == 3
    # only the newest trainer state is kept, and no half-written step-1 files survive the kill
    assert [p.name for p in (run_dir / "state").iterdir()] == ["step-000002"]
    check_committed(run_dir, 3)


def test_pooled_rounds_sum_audit_counts_and_weigh_precision():
    """Two rounds auditing 1 (right) and 3 (none right) labels: 4 audited, precision 1/4, not the
    0.5 and 2.0 that averaging over rounds gives."""
    from minisir.step_metrics import merge_rounds
    from minisir.methods.common import StepResult

    rounds = [StepResult([], [], [], {"label_audited": 1, "label_precision": 1.0, "parse_rate": 0.5}),
              StepResult([], [], [], {"label_audited": 3, "label_precision": 0.0, "parse_rate": 1.0}),
              StepResult([], [], [], {"label_audited": 0, "label_precision": None, "parse_rate": 0.0})]
    from minisir.methods.common import METRICS

    merged = merge_rounds(rounds, METRICS).metrics
    assert merged["label_audited"] == 4
    assert merged["label_precision"] == pytest.approx(0.25)
    assert merged["parse_rate"] == pytest.approx(0.5)  # a rate over equal rounds stays a mean
    none = merge_rounds([StepResult([], [], [], {"label_audited": 0, "label_precision": None})] * 2, METRICS).metrics
    assert none["label_audited"] == 0 and none["label_precision"] is None


def test_a_method_declares_how_its_metrics_combine_over_rounds():
    """A toy method's own metrics, which loop.py never names: a count summed, a share weighted by
    its count, anything undeclared averaged; the merged step prints and reports like any other."""
    from minisir.step_metrics import merge_rounds, summary_line
    from minisir.methods.common import StepResult

    rules = {"widgets": "sum", "widget_quality": "mean/widgets"}
    rounds = [StepResult([], [], [], {"widgets": 1, "widget_quality": 1.0, "mood": 2.0}),
              StepResult([], [], [], {"widgets": 3, "widget_quality": 0.0, "mood": 4.0})]
    merged = merge_rounds(rounds, rules).metrics
    assert merged["widgets"] == 4 and merged["widget_quality"] == pytest.approx(0.25)
    assert merged["mood"] == pytest.approx(3.0) and merged["rounds"] == 2
    assert summary_line(0, merged).startswith("step 0:")


def test_every_method_declares_its_counts():
    """Each method module's METRICS names only metrics its step writes as counts or shares."""
    from minisir.methods import METHODS, method_module

    for name in METHODS:
        rules = method_module(name).METRICS
        assert rules["label_audited"] == "sum" and rules["label_precision"] == "mean/label_audited"
        assert all(r == "sum" or (r.startswith("mean/") and r.removeprefix("mean/") in rules) for r in rules.values())


def test_methods_see_the_context_never_the_recipe_or_the_archive():
    """A method's step reads its config, seeds, floors and problems through methods.common.Context; an
    attribute named recipe or archive anywhere in a method module would reach past it."""
    import ast
    from pathlib import Path

    import minisir.methods as methods

    reached = [f"{path.name}:{node.lineno} .{node.attr}"
               for path in sorted(Path(methods.__file__).parent.glob("*.py"))
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Attribute) and node.attr in ("recipe", "archive")]
    assert reached == []
