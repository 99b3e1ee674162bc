"""method.verifier end to end: one SQLM step on a toy topic whose answers are chemical formulas,
on the bundled model. What is sampled is forced (sampled text differs between CPUs); labelling,
the user's checker, rewards, training and the archive run for real."""

from __future__ import annotations

from minisir.methods import sqlm as S
from tiny_run import force_sampled, run_one_step

PROBLEM = "What is the chemical formula of table salt?"
ANSWERS = ["ClNa", "NaCl", "Na2Cl"]  # the first two are the label's atoms in another order


def test_a_toy_topic_is_labelled_and_judged_by_the_users_verifier(tmp_path, monkeypatch):
    def rewrite(runner, round_, call, prompts, n, groups, as_text):
        if n == runner.recipe.method.proposals_per_prompt:  # the proposer: one known problem first
            groups[0][0] = as_text(groups[0][0], f'{PROBLEM}\n</problem>\n<program>\nprint("NaCl")\n')
            return groups
        for i, prompt in enumerate(prompts):
            if PROBLEM in prompt:
                groups[i] = [as_text(c, f"So \\boxed{{{a}}}.") for c, a in zip(groups[i], ANSWERS)]
        return groups

    force_sampled(monkeypatch, S, rewrite)
    rows, metrics = run_one_step({
        "model": {"gguf": "bundled"},
        "sampler": {"n_ctx": 2048, "n_parallel": 8, "n_threads": 2},
        "method": {"name": "sqlm", "topic": "the chemical formula of a simple compound", "answer_kind": "number",
                   "labels": "program", "verifier": "toy_verifier:same_formula",
                   "topic_examples": [{"problem": "What is the chemical formula of water?", "program": 'print("H2O")'}],
                   "proposals_per_step": 2, "proposals_per_prompt": 2, "solver_samples": 3,
                   "proposer_max_tokens": 32, "solver_max_tokens": 16, "proposer_update_every": 1},
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024},
        "run": {"steps": 1, "seed": 5, "dir": str(tmp_path / "run")},
    })
    row = rows[PROBLEM]
    assert row["valid"] and row["label"] == "NaCl"  # the program's output, not a number
    assert [s["reward"] for s in row["solutions"]] == [1.0, 1.0, 0.0]  # atoms compared, order ignored
    assert row["teacher_reward"] == 1.0  # 2 of 3: inside the band 1 < m < 3
    assert metrics["solver_groups_trained"] >= 1
