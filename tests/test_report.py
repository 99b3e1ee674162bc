"""Report of a small, real archive: Markdown, PNG plots, fallbacks and skip notes."""

from __future__ import annotations

import pytest

from minisir.archive import Archive
from minisir.report import lineage_depths, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_STEPS = 6
CONCEPTS = {0: ["addition", "counting"], 1: ["addition"], 2: ["fractions"], 3: ["fractions", "ratios"],
            4: ["probability"], 5: ["probability", "combinatorics"]}


def _populate(run_dir) -> Archive:
    archive = Archive.open(run_dir)
    archive.ensure_run({"model": {"gguf": "bundled"}, "method": {"name": "opensir"}}, {"minisir": "0.1.0"}, 0)
    parent = None
    for step in range(N_STEPS):
        problems, solutions = [], []
        if step == 0:
            problems.append({"key": "seed", "text": "What is 1+1?", "role": "seed", "valid": True})
            parent_ref = {"parent_key": "seed"}
        else:
            parent_ref = {"parent_id": parent}
        problems.append({
            "key": "p", "text": f"Step {step} problem about {CONCEPTS[step][0]}: what is {step} + {step}?",
            "concepts": CONCEPTS[step], "role": "teacher", "valid": True, "solve_rate": 0.5 + step / 20,
            "teacher_reward": 0.1 * step, "majority_answer": str(2 * step), **parent_ref,
            "majority_correct": step % 3 == 0,  # the label audit: vote right at steps 0 and 3
        })
        problems.append({"key": "bad", "text": "garbage", "role": "teacher", "valid": step % 2 == 0,
                         "invalid_reason": None if step % 2 == 0 else "no_problem_tag", "concepts": ["noise"],
                         "teacher_reward": 0.0, **parent_ref})
        for j in range(4):
            solutions.append({"problem_key": "p", "text": f"... \\boxed{{{2 * step}}}", "n_tokens": 20 + 10 * step + j,
                              "answer": str(2 * step), "agrees": j < 3, "reward": 1.0 if j < 3 else 0.0,
                              "finish_reason": "stop"})
        # the loop's per-step metrics: some stored, others left to the table fallback;
        # diversity is neither stored nor present in the tables -> skipped with a note.
        metrics = {"step": step, "teacher_reward_mean": 0.1 * step, "valid_rate": 1.0 if step % 2 == 0 else 0.5,
                   "loss": 0.5 - step * 0.01, "seconds_step": 30.0}
        ids = archive.commit_step(metrics, problems, solutions,
                                  {"path": str(run_dir / f"adapter-{step}.gguf"), "sha256": "x"})
        parent = ids["p"]
    archive.add_eval(None, "gsm8k-100", {"pass@1": 0.02, "pass@1_ci": [0.0, 0.05], "greedy": 0.03,
                                         "greedy_ci": [0.0, 0.06], "n_questions": 100,
                                         "config": {"benchmark": "gsm8k-100", "k": 4}})
    for step in (2, 5):
        archive.add_eval(step, "gsm8k-100", {"pass@1": 0.02 + step / 100, "pass@1_ci": [0.01, 0.09 + step / 100],
                                             "n_questions": 100, "config": {"benchmark": "gsm8k-100", "k": 4}})
    return archive


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _populate(run).close()
    return run


def test_report_writes_markdown_and_plots(run_dir, tmp_path):
    out = tmp_path / "rep"
    path = write_report(run_dir, out)
    assert path == out / "report.md"
    md = path.read_text()
    for name in ("rewards.png", "solve_rate.png", "valid_rate.png", "solution_length.png",
                 "eval_accuracy.png", "lineage_depth.png", "label_audit.png"):
        png = out / name
        assert png.is_file() and png.stat().st_size > 5000, name
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in md
    # held-out accuracy against minutes of step time: step 5 ends after six 30 s steps
    png = out / "eval_minutes.png"
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC and "](eval_minutes.png)" in md
    assert "step 5, 3.0 min" in md and "step 2, 1.5 min" in md
    # no diversity anywhere: plot skipped, with a note, not an error
    assert not (out / "diversity.png").exists()
    assert "diversity_mean" in md and "plot skipped" in md
    # the student reward curve came from the solutions table (3 of 4 agree)
    assert "| student_reward_mean | 0 | 0.750 | 5 | 0.750 | tables |" in md
    assert "| teacher_reward_mean | 0 | 0.000 | 5 | 0.500 | step metrics |" in md
    assert "| label_precision | 0 | 1.000 | 5 | 0.000 | tables |" in md  # from the archive's audit column
    # concepts by phase: early shows addition, late shows probability
    concepts_part = md.split("## How hard the problems are")[0]  # the difficulty table has phase rows too
    rows = {line.split("|")[1].strip(): line for line in concepts_part.splitlines() if line.startswith("| early")
            or line.startswith("| middle") or line.startswith("| late")}
    assert "addition (2)" in rows["early"] and "probability (2)" in rows["late"] and "fractions" in rows["middle"]
    assert "Step 5 problem about probability" in md and "Step 0 problem" in md
    assert "| base (#1) | gsm8k-100 | 100 | 4 | 2.0 [0.0, 5.0]" in md


def test_report_default_dir_and_lineage(run_dir):
    path = write_report(run_dir / "archive.sqlite")
    assert path == run_dir / "report" / "report.md" and path.is_file()
    archive = Archive.open(run_dir, readonly=True)
    depths = lineage_depths(archive)
    teacher = {p["step"]: depths[p["id"]] for p in archive.valid_problems() if p["key"] == "p"}
    seed = [p for p in archive.valid_problems() if p["key"] == "seed"][0]
    archive.close()
    assert depths[seed["id"]] == 0
    assert teacher == {s: s + 1 for s in range(N_STEPS)}  # each problem descends from the previous one
    assert "max 6" in path.read_text()


def test_report_of_empty_run(tmp_path):
    (tmp_path / "empty").mkdir()
    Archive.open(tmp_path / "empty").close()
    path = write_report(tmp_path / "empty", tmp_path / "out")
    md = path.read_text()
    assert "No evaluations recorded" in md and "No valid teacher problems" in md
    assert list((tmp_path / "out").glob("*.png")) == []


def test_report_says_where_a_step_s_time_goes(tmp_path):
    """Phase seconds averaged over RL steps (pool steps left out), sampling rates and the share of
    sampled tokens that trained."""
    run = tmp_path / "run"
    run.mkdir()
    archive = Archive.open(run)
    archive.ensure_run({"model": {"gguf": "bundled"}, "method": {"name": "sqlm"}}, {"minisir": "0"}, 0)
    archive.commit_step({"step": 0, "phase": "pool", "seconds_solver": 100.0, "seconds_step": 100.0}, [], [])
    for step, solver in ((1, 20.0), (2, 30.0)):
        archive.commit_step({"step": step, "seconds_solver": solver, "seconds_train": 10.0, "seconds_step": solver + 10,
                             "student_tokens_per_s": 90.0, "trained_token_share": 0.1 * step,
                             "train_tokens": 100.0 * step, "decode_occupancy": 0.5 + 0.1 * step,
                             "sampler_decode_s": 10.0 * step, "loop_stops": 3.0 * step}, [], [])
    archive.close()
    md = write_report(run).read_text()
    section = md.split("## Where a step's time goes")[1]
    assert "Means over 2 RL steps." in section
    assert "| solver | 25.00 |" in section and "| train | 10.00 |" in section and "| **step** | 35.000 |" in section
    assert "| share of sampled tokens trained | 0.150 |" in section
    assert "| sampler: generation batch occupancy (sequences per decode / n_parallel) | 0.650 |" in section
    assert "| sampler: seconds in generation decodes | 15.000 |" in section
    assert "| sampler: completions stopped as loops (sampler.loop_repeats) | 4.500 |" in section
    assert "| training, tokens/s (trained tokens / train phase) | 15.000 |" in section  # mean of 10 and 20


def _curve_run(path, method: str, seconds: float, accuracy: dict) -> None:
    """A run whose steps take `seconds` each, with a base eval and step evals of a small protocol,
    and one 200-question eval that must stay off the small protocol's line."""
    path.mkdir()
    archive = Archive.open(path)
    archive.ensure_run({"model": {"gguf": "bundled"}, "method": {"name": method}}, {"minisir": "0"}, 0)
    for step in range(4):
        archive.commit_step({"step": step, "seconds_step": seconds}, [], [])
    small = {"n_questions": 50, "k": 2, "max_tokens": 192, "temperature": 0.6, "top_p": 0.95, "seed": 0}
    for step, value in accuracy.items():
        archive.add_eval(step, "arithmetic-easy", {"pass@1": value, "config": small})
    archive.add_eval(3, "arithmetic-easy", {"pass@1": 0.99, "config": {**small, "n_questions": 200, "k": 4}})
    archive.close()


def test_report_draws_other_runs_beside_it_against_minutes(tmp_path):
    """`minisir report A --beside B`: both runs' held-out accuracy against minutes of step time, on
    the eval protocol they share; another protocol's rows (the 200-question eval) join no line."""
    _curve_run(tmp_path / "sqlm-run", "sqlm", 60.0, {None: 0.10, 1: 0.20, 3: 0.30})
    _curve_run(tmp_path / "rlvr-run", "rlvr", 30.0, {None: 0.10, 3: 0.40})
    md = write_report(tmp_path / "sqlm-run", tmp_path / "out", beside=[tmp_path / "rlvr-run"]).read_text()
    section = md.split("## Beside other runs")[1]
    assert "n_questions 50, k 2" in section
    # steps end at 1, 2, 3, 4 minutes (60 s each) and at 0.5 ... 2 minutes (30 s each)
    assert "| sqlm-run (sqlm) | 0.0: 10.0, 2.0: 20.0, 4.0: 30.0 |" in section
    assert "| rlvr-run (rlvr) | 0.0: 10.0, 2.0: 40.0 |" in section
    assert (tmp_path / "out" / "beside_minutes.png").read_bytes().startswith(PNG_MAGIC)


def test_report_beside_a_run_with_no_shared_eval_says_so(tmp_path):
    _curve_run(tmp_path / "a", "sqlm", 60.0, {None: 0.10, 1: 0.20})
    (tmp_path / "b").mkdir()
    Archive.open(tmp_path / "b").close()
    md = write_report(tmp_path / "a", tmp_path / "out", beside=[tmp_path / "b"]).read_text()
    assert "nothing to compare" in md.split("## Beside other runs")[1]
    assert not (tmp_path / "out" / "beside_minutes.png").exists()


def test_sampler_split_reads_one_steps_share_of_the_running_totals():
    """A step's sampler seconds and batch occupancy are differences of the sampler's running totals:
    30 decode calls carrying 240 sequences with 16 slots ran half full."""
    from minisir.step_metrics import sampler_split

    before = {"prompt_s": 1.0, "decode_s": 5.0, "sample_s": 0.5, "decode_calls": 10.0, "decode_rows": 100.0}
    after = {"prompt_s": 3.0, "decode_s": 12.5, "sample_s": 1.0, "decode_calls": 40.0, "decode_rows": 340.0}
    assert sampler_split(before, after, 16) == {"sampler_prompt_s": 2.0, "sampler_decode_s": 7.5,
                                                "sampler_sample_s": 0.5, "decode_occupancy": 0.5}
    assert sampler_split({}, {}, 16) == {}  # a server sampler keeps no totals


def test_a_method_declares_its_own_report_curves(tmp_path, monkeypatch):
    """A toy method's metric, which report.py never names, gets its panel from the method's CURVES and
    PANELS; the common panels stay, and another method's (OpenSIR's diversity) does not appear."""
    import sys
    import types

    from minisir.methods import METHODS
    from minisir.methods.curves import Curve

    fake = types.ModuleType("minisir.methods.widgets")
    fake.CURVES = {"widgets": Curve("widgets", "widgets made", "SELECT step, NULL FROM steps WHERE 0")}
    fake.PANELS = (("widgets.png", "Widgets", "widgets a step", ("widgets",), None),)
    monkeypatch.setitem(sys.modules, "minisir.methods.widgets", fake)
    monkeypatch.setitem(METHODS, "widgets", ("minisir.methods.widgets", "WidgetConfig"))
    run = tmp_path / "run"
    with Archive.open(run) as arc:
        arc.ensure_run({"model": {"gguf": "bundled"}, "method": {"name": "widgets"}}, {}, 0)
        for step in range(3):
            arc.commit_step({"step": step, "widgets": 2.0 * step, "teacher_reward_mean": 0.1, "seconds_step": 1.0},
                            [], [], None)
    out = tmp_path / "rep"
    md = write_report(run, out).read_text()
    assert (out / "widgets.png").read_bytes()[:8] == PNG_MAGIC and "](widgets.png)" in md
    assert "| widgets | 0 | 0.000 | 2 | 4.000 | step metrics |" in md
    assert (out / "rewards.png").is_file() and "diversity.png" not in md and "diversity_mean" not in md
