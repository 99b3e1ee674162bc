"""SQLM end to end on the bundled model (CPU): one short step per topic."""

from __future__ import annotations

import pytest

from minisir.archive import Archive
from minisir.loop import Runner
from minisir.recipe import parse_recipe
from tiny_run import FORCED, check_committed, force_valid_proposal, forced_answers


def recipe(topic: str, run_dir) -> dict:
    coding = topic == "coding"
    return {
        "model": {"gguf": "bundled"},
        "sampler": {"n_ctx": 4096, "n_parallel": 8, "n_threads": 2},
        "method": {"name": "sqlm", "topic": topic, "proposals_per_step": 3, "proposals_per_prompt": 3, "solver_samples": 3,
                   "proposer_update_every": 1, "proposer_max_tokens": 200 if coding else 48,
                   "solver_max_tokens": 96 if coding else 48},
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 2048},
        "run": {"steps": 1, "seed": 1, "dir": str(run_dir)},
    }


@pytest.mark.parametrize("topic", ["arithmetic", "algebra", "coding"])
def test_one_sqlm_step_per_topic(topic, tmp_path, monkeypatch):
    """One step whose first proposal is a known valid problem (tiny_run.force_valid_proposal) solved
    by 2 of 3 solvers: it must be voted on (or tested), pay its proposer 1, train its solvers and leave
    an adapter and trainer state; the other two proposals are sampled and checked for consistency."""
    force_valid_proposal(monkeypatch)
    runner = Runner(parse_recipe(recipe(topic, tmp_path / "run")), progress=False)
    try:
        assert runner.run() == 1
    finally:
        runner.close()
    with Archive.open(tmp_path / "run", readonly=True) as arc:
        problems = [arc.problem(p["id"]) for p in arc.problems(limit=100)]
        step = arc.steps()[0]
        metrics = step["metrics"]
    assert len(problems) == 3 and all(p["role"] == "proposer" for p in problems)
    assert metrics["topic"] == topic
    known = problems[0]
    assert known["text"] == FORCED[topic][0] and known["valid"] and known["invalid_reason"] is None
    assert [s["reward"] for s in known["solutions"]] == [1.0, 1.0, 0.0] and known["teacher_reward"] == 1.0
    if topic != "coding":  # answers 2 right, 1 wrong: a clear majority of 2 inside the band 1 < m < 3
        assert known["majority_answer"] == forced_answers(topic, 3)[0]
        assert [s["answer"] for s in known["solutions"]] == forced_answers(topic, 3)
    assert metrics["solver_groups_trained"] >= 1 and metrics["train_groups_used"] >= 1
    assert metrics["train_tokens"] > 0 and step["adapter_path"]
    check_committed(tmp_path / "run", 1)  # the adapter on disk matches; state/ holds step 0
    for p in problems:
        assert p["teacher_reward"] in (0.0, 1.0)
        if not p["valid"]:
            assert p["invalid_reason"] and p["teacher_reward"] == 0.0
            if p["invalid_reason"].startswith("leak"):  # voted on, then refused: its answer is in its text
                assert len(p["solutions"]) == 3 and p["majority_answer"] is not None
            else:
                assert p["solutions"] == [], "invalid proposals never reach the solver"
            continue
        assert len(p["solutions"]) == 3
        rewards = [s["reward"] for s in p["solutions"]]
        if topic == "coding":
            assert len(p["extra"]["tests"]) >= 5
            assert all(0.0 <= r <= 1.0 for r in rewards)
            rate = sum(rewards) / len(rewards)
            assert p["teacher_reward"] == (1.0 if 0.0 < rate < 1.0 else 0.0)
        else:
            assert set(rewards) <= {0.0, 1.0}
            m = int(sum(rewards))  # solvers in the majority class
            assert p["teacher_reward"] == (1.0 if 1 < m < 3 else 0.0)
