"""SQLM's stretch problems: a problem harder than most of its round that no first sample solved gets
more samples; a right one among them pays the proposer and trains the solvers on the whole group.

Expectations are written by hand from the problems; the play test forces what is sampled (sampled
text differs between CPUs) and runs everything else for real on the bundled model.
"""

from __future__ import annotations

import pytest

from minisir.errors import RecipeError
from minisir.methods import sqlm as S
from minisir.recipe import parse_recipe
from tiny_run import force_sampled, run_one_step


def test_picks_only_unsolved_problems_above_the_rounds_median_hardest_first():
    # computations (operations, operand digits); the median of these five is (1, 2)
    hardness = {0: (1, 2), 1: (1, 2), 2: (2, 2), 3: (2, 3), 4: (1, 1)}
    assert S.stretch_picks(hardness, {2: 0, 3: 1}, k=4) == [2]  # 3 was solved once: no stretch needed
    assert S.stretch_picks(hardness, {}, k=4) == [3, 2]
    assert S.stretch_picks(hardness, {}, k=1) == [3]
    assert S.stretch_picks({0: (2, 2), 1: (2, 2)}, {}, k=4) == []  # nothing is harder than the median
    assert S.stretch_picks({}, {}, k=4) == []


def test_a_stretch_problem_pays_when_any_sample_is_right():
    assert S.stretch_reward(0) == 0.0
    assert S.stretch_reward(1) == 1.0 and S.stretch_reward(9) == 1.0


def test_stretch_needs_executed_labels():
    with pytest.raises(RecipeError, match="stretch_samples needs labels: program"):
        parse_recipe({"method": {"name": "sqlm", "topic": "arithmetic", "stretch_samples": 8}})
    assert parse_recipe({"method": {"name": "sqlm", "topic": "arithmetic", "labels": "program",
                                    "stretch_samples": 8}}).method.stretch_samples == 8


# Each round writes three one-operation sums and one problem of three operations. The sums are solved
# 2 in 3; the hard one 0 in 3 at first. Its stretch samples hold one right answer in round 0, none in round 1.
EASY = [("What is 2 + 3?", "5"), ("What is 4 + 5?", "9"), ("What is 6 + 1?", "7")]
HARD = [("What is (12 + 7) * 3 - 5?", "52"), ("What is (20 - 6) * 2 + 9?", "37")]


def _force(monkeypatch):
    def rewrite(runner, round_, call, prompts, n, groups, as_text):
        hard, right = HARD[round_]
        problems = EASY + [(hard, right)]
        if n == runner.recipe.method.proposals_per_prompt:  # the proposer
            texts = [f"{q}\n</problem>\n<program>\nprint({q.removeprefix('What is ').rstrip('?')})\n"
                     for q, _ in problems]
            return [[as_text(c, t) for c, t in zip(g, texts)] for g in groups]
        for i, prompt in enumerate(prompts):
            q, a = next((q, a) for q, a in problems if q in prompt)
            if n == runner.recipe.method.stretch_samples:  # the stretch call: only the hard problem
                assert q == hard
                answers = ([a] if round_ == 0 else ["1"]) + ["1"] * (n - 1)
            else:
                answers = [a, a, "1"] if q != hard else ["1", "2", "3"]
            groups[i] = [as_text(c, f"So \\boxed{{{x}}}.") for c, x in zip(groups[i], answers)]
        return groups

    force_sampled(monkeypatch, S, rewrite)


def test_a_stretch_problem_gets_more_samples_and_pays_only_with_a_right_one(tmp_path, monkeypatch):
    _force(monkeypatch)
    rows, metrics = run_one_step({
        "model": {"gguf": "bundled"},
        "sampler": {"n_ctx": 2048, "n_parallel": 8, "n_threads": 2},
        "method": {"name": "sqlm", "topic": "arithmetic", "labels": "program", "proposals_per_step": 4,
                   "proposals_per_prompt": 4, "solver_samples": 3, "stretch_samples": 5, "stretch_max": 2,
                   "proposer_max_tokens": 16, "solver_max_tokens": 16, "proposer_update_every": 1},
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024},
        "run": {"steps": 1, "seed": 3, "dir": str(tmp_path / "run"), "rounds_per_step": 2},
    })
    hit, miss = rows[HARD[0][0]], rows[HARD[1][0]]
    assert hit["extra"].get("stretch") and miss["extra"].get("stretch")
    assert [s["reward"] for s in hit["solutions"]] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert hit["teacher_reward"] == 1.0  # outside the band 1 < m < 3, but one stretch sample was right
    assert len(miss["solutions"]) == 8 and miss["teacher_reward"] == 0.0
    for q, _ in EASY:  # solved 2 in 3: never stretched, paid by the band
        assert len(rows[q]["solutions"]) == 3 and not rows[q]["extra"].get("stretch")
        assert rows[q]["teacher_reward"] == 1.0
    assert metrics["stretch_problems"] == 2 and metrics["stretch_solved"] == 1
    # six easy groups, plus the hard one with a right answer; the all-wrong one has no spread
    assert metrics["solver_groups_trained"] == 7
