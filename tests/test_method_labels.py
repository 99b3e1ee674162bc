"""method.labels (majority / program / agree) in SQLM and OpenSIR: prompts, parsing, rewards, refusals.

Every expectation is written by hand from the problem, not computed with the code under test.
"""

from __future__ import annotations

import pytest

from minisir.errors import RecipeError
from minisir.labels import Executed
from minisir.methods import opensir as O
from minisir.methods import sqlm as S
from minisir.recipe import parse_recipe
from minisir.sampler import Completion

WORD = "Tom has 35 marbles and gives 12 of them to his sister. How many marbles does Tom have now?"


def _sols(answers):
    return [f"Work. The answer is \\boxed{{{a}}}." if a is not None else "I am not sure." for a in answers]


def _cfg(**kw):
    return S.SQLMConfig(topic="easy arithmetic", answer_kind="number", topic_examples=["What is 2 + 3?"], **kw)


# --------------------------------------------------------------------------- SQLM
def test_program_labels_reward_true_correctness_not_the_vote():
    cfg = _cfg(labels="program")
    s = S.score_math(_sols(["22", "22", "23", None]), cfg, truth="23")
    assert s.solver_rewards == [0.0, 0.0, 1.0, 0.0]
    assert s.majority_size == 1 and s.proposer_reward == 0.0  # 1 < m < 4 fails: too hard
    assert s.vote_answer == "22" and s.label == "23"
    s = S.score_math(_sols(["23", "23", "22", None]), cfg, truth="23")
    assert s.solver_rewards == [1.0, 1.0, 0.0, 0.0] and s.proposer_reward == 1.0


def test_program_labels_pay_a_value_not_the_sum_restated():
    """Boxing the problem's own expression ("27 * 8") is not an answer: no solver reward, and m
    counts only the solver that computed 216 (a policy paid for restating learnt it in 20 steps)."""
    s = S.score_math(_sols(["27 * 8", "27*8", "216", "217"]), _cfg(labels="program"), truth="216")
    assert s.solver_rewards == [0.0, 0.0, 1.0, 0.0] and s.majority_size == 1 and s.proposer_reward == 0.0


def test_a_tie_pays_the_proposer_nothing_with_require_majority():
    cfg = _cfg()
    s = S.score_math(_sols(["5", "5", "6", "6"]), cfg)
    assert s.proposer_reward == 1.0  # the band alone would pay it
    why = S.no_label_reason("What is 13 - 7 - 1 + 1?", s, cfg)
    assert why == "no clear majority"
    assert S.proposer_payment(s, None, why, cfg) == 0.0
    loose = _cfg(require_majority=False)
    assert S.no_label_reason("What is 13 - 7 - 1 + 1?", s, loose) is None
    assert S.proposer_payment(s, None, None, loose) == 1.0


def test_agree_labels_need_the_vote_to_match_the_program():
    cfg = _cfg(labels="agree")
    s = S.score_math(_sols(["164", "164", "164", "216"]), cfg, truth="216")
    why = S.no_label_reason("What is 27 * 8 + 0?", s, cfg)
    assert why == "majority differs from the executed answer"
    assert S.proposer_payment(s, None, why, cfg) == 0.0
    s = S.score_math(_sols(["216", "216", "216", "164"]), cfg, truth="216")
    assert S.no_label_reason("What is 27 * 8 + 0?", s, cfg) is None
    assert s.solver_rewards == [1.0, 1.0, 1.0, 0.0] and S.proposer_payment(s, None, None, cfg) == 1.0


def test_refusal_without_a_label_or_with_a_leaked_label():
    cfg = _cfg(labels="program")
    assert S.refusal(WORD, Executed(None, None, "program failed: NameError"), cfg) == \
        "no label: program failed: NameError"
    assert S.refusal("A shop sells 12 apples at 2 dollars each. It earns 24 dollars. How much?",
                     Executed("24", "program"), cfg).startswith("leak")
    assert S.refusal(WORD, Executed("23", "program"), cfg) is None
    assert S.proposer_payment(S.score_math(_sols(["23", "23", "1", "2"]), cfg, "23"), "leak: x", None, cfg) == 0.0


def test_labelled_prompt_shows_programs_and_stops_after_the_program():
    cfg = _cfg(labels="program")
    prompt = S.proposer_prompt(cfg.topic, None, kind="number", examples=[{"problem": WORD, "program": "print(35 - 12)"}],
                               program=True)
    assert f"{WORD}\n</problem>\n<program>\nprint(35 - 12)\n</program>" in prompt
    assert prompt.endswith("<problem>\n") and "<program></program> computes the answer" in prompt
    assert S.proposer_stop(cfg.topic, False, "number", program=True)[0] == "</program>"
    bare = S.proposer_prompt("arithmetic", None, program=True)
    assert "<program>\nprint(" in bare  # built-in bare expressions get print(expression)


def test_parse_keeps_the_program():
    p = S.parse_proposal(f"{WORD}\n</problem>\n<program>\nleft = 35 - 12\nprint(left)\n", "easy arithmetic",
                         kind="number")
    assert p.valid and p.program == "left = 35 - 12\nprint(left)"
    assert S.parse_proposal(f"{WORD}\n</problem>\n", "easy arithmetic", kind="number").program is None


def test_recipe_needs_programs_for_word_examples():
    data = {"method": {"name": "sqlm", "topic": "easy arithmetic", "answer_kind": "number", "labels": "program",
                       "topic_examples": ["What is 2 + 3?", WORD]}}
    with pytest.raises(RecipeError, match=r"topic_examples\[1\] needs a program"):
        parse_recipe(data)
    data["method"]["topic_examples"][1] = {"problem": WORD, "program": "print(35 - 12)"}
    assert parse_recipe(data).method.labels == "program"
    data["method"].update(topic="coding", answer_kind=None, topic_examples=[])
    with pytest.raises(RecipeError, match="coding is labelled by its tests"):
        parse_recipe(data)


# --------------------------------------------------------------------------- OpenSIR
def _completions(answers):
    return [Completion(text=t, token_ids=[1] * 10, logprobs=[], finish_reason="stop") for t in _sols(answers)]


PROBLEM = "A farmer plants 5 rows of 7 trees and then 3 more trees. How many trees are there in all?"


def test_opensir_solve_rate_counts_all_students():
    out = O.TeacherOutput(PROBLEM, ["multiplication"], valid=True)
    st = O._score_problem(out, _completions(["12", "12", "9", None, None, None, None, None]), 0.3, None,
                          O.OpenSIRConfig(), False)
    assert st["solve_rate"] == pytest.approx(0.25)  # 2 of 8, not 2 of the 3 that parsed
    assert st["score"].solvability == 0.0


def test_opensir_program_labels():
    cfg = O.OpenSIRConfig(labels="program")
    out = O.TeacherOutput(PROBLEM, ["multiplication"], valid=True, program="print(5 * 7 + 3)")
    answers = ["38", "38", "38", "38", "38", "35", None, None]
    st = O._score_problem(out, _completions(answers), 0.3, None, cfg, False, Executed("38", "program"))
    assert st["solve_rate"] == pytest.approx(5 / 8) and st["score"].solvability > 0
    assert st["agrees"] == [True] * 5 + [False] * 3 and st["admitted"]
    wrong = O._score_problem(out, _completions(["35"] * 5 + ["38"] * 3), 0.3, None, cfg, False,
                             Executed("38", "program"))
    assert wrong["solve_rate"] == pytest.approx(3 / 8) and wrong["score"].solvability == 0.0
    assert wrong["audit"] is False  # the vote (35) was wrong: the audit sees it


def test_opensir_program_labels_pay_a_value_not_the_sum_restated():
    cfg = O.OpenSIRConfig(labels="program")
    out = O.TeacherOutput(PROBLEM, ["multiplication"], valid=True, program="print(5 * 7 + 3)")
    answers = ["5 * 7 + 3"] * 6 + ["38", None]
    st = O._score_problem(out, _completions(answers), 0.3, None, cfg, False, Executed("38", "program"))
    assert st["agrees"] == [False] * 6 + [True, False] and st["solve_rate"] == pytest.approx(1 / 8)
    # Restated sums do not vote: the pseudo-label is the one stated value, and it is right.
    assert st["vote"].answer == "38" and st["vote"].count == 1 and st["audit"] is True


def test_opensir_agree_labels_refuse_a_wrong_vote():
    cfg = O.OpenSIRConfig(labels="agree")
    out = O.TeacherOutput(PROBLEM, ["multiplication"], valid=True, program="print(5 * 7 + 3)")
    st = O._score_problem(out, _completions(["35"] * 5 + ["38"] * 3), 0.3, None, cfg, False,
                          Executed("38", "program"))
    assert st["refused"] == "majority differs from the executed answer"
    assert st["score"].reward == 0.0 and not st["admitted"] and not st["admitted_for_students"]


def test_opensir_teacher_prompt_and_parse_with_programs():
    prompt = O.teacher_prompt("What is 2+2?", [], None, False, program=True)
    assert "<program>\nprint(40 * (1 - 0.25) * (1 + 0.10))\n</program>" in prompt
    out = O.parse_teacher("Five rows of 7 trees and 3 more: how many trees are there in all?</problem>\n"
                          "<program>\nprint(5 * 7 + 3)\n</program>\n<concepts>multiplication, addition")
    assert out.valid and out.program == "print(5 * 7 + 3)" and out.concepts == ["multiplication", "addition"]


# --------------------------------------------------------------------------- a real SQLM step
def test_sqlm_step_with_executed_labels(tmp_path, monkeypatch):
    """The proposer's output is forced (a word problem with a program, one whose program fails, one that
    leaks its answer); the solvers sample for real. Rewards must be true correctness against the
    executed answers, refusals must keep their reasons, and the archive must hold the audit."""
    import json
    import sqlite3

    import yaml
    from click.testing import CliRunner

    from minisir.answers import equivalent
    from minisir.cli import main
    from minisir.sampler import Sampler

    forced = [
        f"{WORD}\n</problem>\n<program>\nleft = 35 - 12\nprint(left)\n",
        "Sara has 14 apples and eats some of them. How many apples are left now?\n</problem>\n"
        "<program>\nprint(14 - apples_eaten)\n",
        "A bag holds 24 sweets in all, shared by 6 kids. How many sweets does the bag hold?\n</problem>\n"
        "<program>\nkids = 6\nprint(24 // kids * kids)\n",
        "What is 7 * 6?\n</problem>\n",
    ]
    real = Sampler.generate

    def generate(self, prompts, n=1, **kw):
        if not prompts or not prompts[0].endswith("<problem>\n"):
            return real(self, prompts, n=n, **kw)  # solvers: the real model
        texts = iter(forced)
        return [[Completion(text=(t := next(texts)), token_ids=self.tokenize(t, add_bos=False), logprobs=[],
                            finish_reason="stop", prompt_ids=self.tokenize(p)) for _ in range(n)] for p in prompts]

    monkeypatch.setattr(Sampler, "generate", generate)
    run_dir = tmp_path / "run"
    recipe = {
        "model": {"gguf": "bundled", "prompt_style": "completion"},
        "sampler": {"n_ctx": 4096, "n_parallel": 8},
        "method": {"name": "sqlm", "labels": "program", "topic": "easy arithmetic", "answer_kind": "number",
                   "topic_examples": ["What is 2 + 3?"], "proposals_per_step": 4, "proposals_per_prompt": 4,
                   "solver_samples": 4, "solver_max_tokens": 32, "proposer_max_tokens": 64},
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024},
        "run": {"steps": 1, "seed": 0, "dir": str(run_dir)},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(run_dir / "archive.sqlite")
    try:
        rows = conn.execute("SELECT id, text, valid, invalid_reason, teacher_reward, extra, executed_answer, "
                            "majority_correct FROM problems ORDER BY id").fetchall()
        sols = {pid: conn.execute("SELECT answer, reward FROM solutions WHERE problem_id = ?", (pid,)).fetchall()
                for pid, *_ in rows}
        metrics = json.loads(conn.execute("SELECT metrics FROM steps").fetchone()[0])
    finally:
        conn.close()
    extra = [json.loads(r[5]) for r in rows]
    assert [r[6] for r in rows] == ["23", None, "24", "42"]
    assert [e["executed_source"] for e in extra] == ["program", None, "program", "expression"]
    assert "NameError" in rows[1][3] and rows[1][3].startswith("no label")
    assert rows[2][3].startswith("leak")
    assert rows[1][4] == rows[2][4] == 0.0 and not sols[rows[1][0]] and not sols[rows[2][0]]
    for (pid, *_), truth in ((rows[0], "23"), (rows[3], "42")):
        got = sols[pid]
        assert len(got) == 4
        for answer, reward in got:  # the reward is true correctness, whatever the vote said
            assert reward == (1.0 if answer is not None and equivalent(answer, truth) else 0.0)
    assert metrics["labelled_rate"] == 0.75
    assert metrics["label_audited"] == sum(1 for r in (rows[0], rows[3]) if r[7] is not None)


def test_every_program_parser_keeps_one_size_rule():
    """SQLM's <program>, OpenSIR's tagged <program> and its ```python block all go through
    labels.checked_program: a program of 2000 characters is kept, one of 2001 is not."""
    from minisir.labels import MAX_PROGRAM_CHARS

    fits = "x = 1\n" + "#" * (MAX_PROGRAM_CHARS - len("x = 1\nprint(x)") - 1) + "\nprint(x)"
    assert len(fits) == MAX_PROGRAM_CHARS
    for code, kept in ((fits, True), (fits + "#", False)):
        sq = S.parse_proposal(f"{WORD}\n</problem>\n<program>\n{code}\n", "arithmetic", "stop", kind="number")
        tagged = O.parse_teacher(f"{WORD}\n</problem>\n<program>\n{code}\n</program>\n<concepts>subtraction")
        fenced = O.parse_fenced(f"{WORD}\n```python\n{code}\n", program=True)
        assert (sq.program == code) is kept and (tagged.program == code) is kept
        assert fenced.valid is kept and (fenced.program == code) is kept
        if not kept:
            assert sq.program is None and tagged.program is None
            assert fenced.reason == f"program longer than {MAX_PROGRAM_CHARS} characters"
