"""SQLM: config, prompts, strict proposal parsing, reward tables, coding rewards via the real sandbox."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from minisir.methods.sqlm import SQLMConfig
from minisir.methods.sqlm_rewards import math_proposer_reward, plan_groups, proposer_updates, score_math
from minisir.methods.sqlm_coding import code_proposer_reward, code_solver_reward, extract_code, score_code
from minisir.methods.sqlm_prompts import (
    PROPOSER_STOP_CODING,
    PROPOSER_STOP_MATH,
    SOLVER_STOP_CODING,
    SOLVER_STOP_MATH,
    Proposal,
    parse_proposal,
    parse_tests,
    proposer_prompt,
    proposer_stop,
    solver_prompt,
    solver_stop,
)
from minisir.sandbox import SandboxConfig, TestCase


# --------------------------------------------------------------------------- config
def test_config_defaults_and_band():
    """The defaults, through what they pay (the reference: N = 4 solvers, the proposer earns 1 when the
    majority is neither unanimous nor a single vote, and trains every 5th step)."""
    def paid(cfg: SQLMConfig) -> list[int]:  # majority sizes m = 0..N that earn the proposer 1
        return [m for m in range(cfg.solver_samples + 1) if math_proposer_reward(m, *cfg.band()) == 1.0]

    cfg = SQLMConfig()
    assert cfg.topic == "arithmetic"
    assert paid(cfg) == [2, 3]
    assert paid(SQLMConfig(solver_samples=8)) == [2, 3, 4, 5, 6, 7]  # the band's top follows N
    assert paid(SQLMConfig(solver_samples=8, band_low=2, band_high=7)) == [3, 4, 5, 6]
    assert [s for s in range(12) if proposer_updates(s, cfg.proposer_update_every)] == [4, 9]
    assert cfg.proposals_per_prompt == 4  # the reference's proposer group


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topic": "poetry"},
        {"solver_samples": 1},
        {"band_low": 3, "band_high": 4},  # empty open interval
        {"band_high": 9},  # above N + 1
        {"pass_low": 0.5, "pass_high": 0.5},
        {"min_tests": 10, "max_tests": 5},
        {"proposer_update_every": 0},
        {"temperature": 0},
        {"sandbox": {"timeout_s": -1}},
        {"solver_sample": 4},  # typo -> extra field
    ],
)
def test_config_rejects(kwargs):
    with pytest.raises(ValidationError):
        SQLMConfig(**kwargs)


def test_sampling_per_role():
    """The proposer samples with the shared knobs; solvers with their own where set, else the shared ones."""
    cfg = SQLMConfig(temperature=0.7, top_p=0.9)
    assert cfg.proposer_sampling().kwargs() == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 384}
    assert cfg.solver_sampling().kwargs() == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512}
    own = SQLMConfig(solver_temperature=0.2, solver_top_p=0.6)
    assert own.solver_sampling().kwargs() == {"temperature": 0.2, "top_p": 0.6, "max_tokens": 512}
    assert own.proposer_sampling().kwargs() == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 384}
    with pytest.raises(ValidationError):
        SQLMConfig(solver_max_tokens=9000)


# --------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("topic", ["arithmetic", "algebra", "coding"])
def test_base_prompts_end_where_the_model_writes(topic):
    p = proposer_prompt(topic, seed=0)
    assert p.endswith("Topic: " + p.rsplit("Topic: ", 1)[1]) and p.endswith("<problem>\n")
    s = solver_prompt("Reverse the input line.", topic)
    if topic == "coding":
        assert s.endswith("Program:\n```python\n")
        assert proposer_stop(topic) == list(PROPOSER_STOP_CODING) and solver_stop(topic) == list(SOLVER_STOP_CODING)
    else:
        assert s.endswith("Problem: Reverse the input line.\nSolution:")
        assert proposer_stop(topic) == list(PROPOSER_STOP_MATH) and solver_stop(topic) == list(SOLVER_STOP_MATH)


def test_seed_varies_few_shot_and_chat_mode_uses_template():
    assert len({proposer_prompt("algebra", seed=s) for s in range(6)}) > 1
    seen = []

    def chat(messages):
        seen.append(messages)
        return "<start_of_turn>user\n" + messages[-1]["content"] + "<end_of_turn>\n<start_of_turn>model\n"

    p = proposer_prompt("coding", chat=chat, min_tests=6)
    assert p.startswith("<start_of_turn>user") and p.endswith("<start_of_turn>model\n<problem>\n")
    assert "at least 6 tests" in seen[-1][-1]["content"] and "<tests>" in seen[-1][-1]["content"]
    assert solver_prompt("Sum two ints.", "coding", chat=chat).endswith("```python\n")
    assert "\\boxed{}" in solver_prompt("1+1?", "arithmetic", chat=chat)
    with pytest.raises(ValueError):
        proposer_prompt("poetry")


# --------------------------------------------------------------------------- parsing: math
@pytest.mark.parametrize(
    "text,topic,finish,valid,reason_part",
    [
        ("What is 417 * 3 - 256?\n", "arithmetic", "stop", True, None),
        ("<problem>What is 417 * 3 - 256?</problem> extra chatter", "arithmetic", "stop", True, None),
        ("Sure!\n<problem>What is 417 * 3 - 256?</problem>", "arithmetic", "stop", False, "stray tag"),
        ("Two numbers add up to 50 and differ by 8. What is the smaller one?", "algebra", "stop", True, None),
        ("What is 417 * 3 - 256?", "arithmetic", "length", False, "truncated"),
        ("What is 417 * 3 - 256?", "arithmetic", "loop", False, "looped"),
        ("   \n", "arithmetic", "stop", False, "empty"),
        ("What is 5?", "arithmetic", "stop", False, "too short"),
        ("What is nine hundred plus 100?", "arithmetic", "stop", False, "two numbers"),
        ("A train leaves a station. How fast does it go?", "algebra", "stop", False, "needs numbers"),
        ("What is 482 + 317 - 205?", "arithmetic", "stop", False, "copied"),
        ("What is 120 + 130?\nAnswer: 250", "arithmetic", "stop", False, "answer"),
        ("What is 120 + 130? \\boxed{250}", "arithmetic", "stop", False, "answer"),
        ("What is 120 + 130?\n<problem>What is 1 + 2?", "arithmetic", "stop", False, "stray tag"),
        ("x" * 2500 + " 1 2", "arithmetic", "stop", False, "longer"),
    ],
)
def test_parse_math_proposals(text, topic, finish, valid, reason_part):
    p = parse_proposal(text, topic, finish_reason=finish)
    assert p.valid is valid, p.reason
    assert p.tests is None
    if valid:
        assert p.reason is None and p.problem and "<" not in p.problem
    else:
        assert reason_part in p.reason


# --------------------------------------------------------------------------- parsing: coding
REVERSE_WORDS = "\n".join(
    [
        "Read a line of words and print them in reverse order, separated by single spaces.",
        "</problem>",
        "<tests>",
        "<input>\nhello world\n</input>\n<output>\nworld hello\n</output>",
        "<input>\na b c\n</input>\n<output>\nc b a\n</output>",
        "<input>one</input><output>one</output>",  # inline form is accepted
        "<input>\nx y\n</input>\n<output>\ny x\n</output>",
        "<input>\nred green blue\n</input>\n<output>\nblue green red\n</output>",
        "",  # the stop string ate </tests>
    ]
)


def test_parse_coding_proposal_good():
    p = parse_proposal(REVERSE_WORDS, "coding")
    assert p.valid, p.reason
    assert p.problem.startswith("Read a line of words")
    assert [t.stdin for t in p.tests] == ["hello world\n", "a b c\n", "one\n", "x y\n", "red green blue\n"]
    assert [t.expected_stdout for t in p.tests] == ["world hello", "c b a", "one", "y x", "blue green red"]
    # chat style: opening tag present, closing </tests> present, trailing chatter ignored
    p2 = parse_proposal("<problem>\n" + REVERSE_WORDS + "</tests>\nHope this helps", "coding")
    assert p2.valid and p2.tests == p.tests


def test_parse_tests_multiline_input_kept_verbatim():
    block = "".join(f"<input>\n3\n1 {i} 2\n</input>\n<output>\n{max(i, 2)}\n</output>\n" for i in range(5))
    tests, reason = parse_tests(block)
    assert reason is None and tests[0] == TestCase("3\n1 0 2\n", "2")


@pytest.mark.parametrize(
    "mutate,reason_part",
    [
        (lambda t: t.replace("</problem>\n<tests>", "</problem>\n"), "missing <tests>"),
        (lambda t: t.replace("</problem>", ""), "missing </problem>"),
        (lambda t: t.split("<input>\nred")[0], "only 4 distinct tests"),
        (lambda t: t.replace("<input>one</input>", "<input>one"), "test 3"),
        (lambda t: t.replace("<output>one</output>", "<output>one</output> junk"), "expected <input>"),
        (lambda t: t.replace("<input>\nx y\n</input>\n<output>\ny x", "<input>\nx y\n</input>\nnote\n<output>\ny x"), "expected <output>"),
        (lambda t: t.replace("<input>\nx y\n", "<input>\na b c\n"), "contradicts"),
        (lambda t: t.replace("<input>\nx y\n</input>\n<output>\ny x", "<input>\na b c\n</input>\n<output>\nc b a"), "only 4 distinct"),
        (lambda t: t.replace("<output>\nc b a", "<output>\n<input>"), "tag inside"),
    ],
)
def test_parse_coding_proposal_malformed(mutate, reason_part):
    text = mutate(REVERSE_WORDS)
    assert text != REVERSE_WORDS
    p = parse_proposal(text, "coding")
    assert not p.valid and p.tests is None
    assert reason_part in p.reason, p.reason


def test_parse_coding_respects_min_and_max_tests():
    assert not parse_proposal(REVERSE_WORDS, "coding", min_tests=6).valid
    p = parse_proposal(REVERSE_WORDS, "coding", min_tests=2, max_tests=3)
    assert p.valid and len(p.tests) == 3
    empty = "\n".join(f"<input>{i}</input><output></output>" for i in range(5))
    assert "empty" in parse_proposal("Print nothing at all, ever.\n</problem>\n<tests>\n" + empty, "coding").reason


@pytest.mark.parametrize(
    "text,code",
    [
        ("print(1)\n", "print(1)"),  # prefilled fence, stop string removed the closing fence
        ("print(1)\n```\nSome explanation", "print(1)"),
        ("Here:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\n", "print(2)"),
        ("```\nprint(3)\n```", "print(3)"),
        ("```py\nprint(4)\n```", "print(4)"),
        ("   \n", None),
        ("```python\n\n```", None),
    ],
)
def test_extract_code(text, code):
    assert extract_code(text) == code


# --------------------------------------------------------------------------- reward tables
@pytest.mark.parametrize(
    "m,low,high,reward",
    [(0, 1, 4, 0.0), (1, 1, 4, 0.0), (2, 1, 4, 1.0), (3, 1, 4, 1.0), (4, 1, 4, 0.0),
     (2, 2, 7, 0.0), (3, 2, 7, 1.0), (6, 2, 7, 1.0), (7, 2, 7, 0.0), (8, 1, 9, 1.0)],
)
def test_math_proposer_band_edges(m, low, high, reward):
    assert math_proposer_reward(m, low, high) == reward


@pytest.mark.parametrize(
    "answers,m,solver,proposer",
    [
        (["7", "7", "7", "7"], 4, [1, 1, 1, 1], 0.0),  # unanimous: too easy
        (["1", "2", "3", "4"], 1, [1, 0, 0, 0], 0.0),  # all different: earliest class wins, m = 1
        (["5", "5", "6", "6"], 2, [1, 1, 0, 0], 1.0),  # tie -> earliest class
        (["9", "8", "9", "9"], 3, [1, 0, 1, 1], 1.0),
        (["0.5", "\\frac{1}{2}", "1/2", "2"], 3, [1, 1, 1, 0], 1.0),  # equivalence, not string equality
        ([None, None, None, None], 0, [0, 0, 0, 0], 0.0),  # nothing parsed
        (["3", None, None, "3"], 2, [1, 0, 0, 1], 1.0),  # unparsed answers never agree
    ],
)
def test_score_math_table(answers, m, solver, proposer):
    sols = [f"Work... The answer is \\boxed{{{a}}}." if a is not None else "I am not sure." for a in answers]
    s = score_math(sols, SQLMConfig())
    assert s.majority_size == m
    assert s.solver_rewards == [float(x) for x in solver]
    assert s.proposer_reward == proposer


def test_code_reward_functions():
    assert code_solver_reward([True, False, True, True]) == 0.75
    assert code_solver_reward([]) == 0.0
    assert code_proposer_reward([1.0, 1.0]) == 0.0
    assert code_proposer_reward([0.0, 0.0]) == 0.0
    assert code_proposer_reward([1.0, 0.0]) == 1.0
    assert code_proposer_reward([0.2, 0.2], low=0.25) == 0.0
    assert code_proposer_reward([]) == 0.0


# --------------------------------------------------------------------------- coding rewards, real sandbox
CODING_CFG = SQLMConfig(topic="coding", sandbox=SandboxConfig(timeout_s=3.0, concurrency=2))


def test_score_code_mixed_solutions_reward_proposer():
    prop = parse_proposal(REVERSE_WORDS, "coding")
    assert prop.valid
    solutions = [
        "print(' '.join(input().split()[::-1]))\n",  # correct
        "w = input().split()\nprint(' '.join(w[::-1]) if len(w) == 2 else input())\n```\nExplained.",  # 2 of 5
        "I cannot write this program.",  # not code: runs, fails
        "```python\nimport os\nos.fork()\n```",  # hostile: refused by the sandbox
    ]
    s = score_code(solutions, prop.tests, CODING_CFG)
    assert s.pass_rates == [1.0, 0.4, 0.0, 0.0]
    assert s.solver_rewards == s.pass_rates
    assert s.passed[1] == [True, False, False, True, False]
    assert s.proposer_reward == 1.0  # mean 0.35 is strictly inside (0, 1)


def test_score_code_all_pass_or_all_fail_gives_no_proposer_reward():
    prop = parse_proposal(REVERSE_WORDS, "coding")
    right = "print(' '.join(reversed(input().split())))"
    s = score_code([right, right], prop.tests, CODING_CFG)
    assert s.pass_rates == [1.0, 1.0] and s.proposer_reward == 0.0
    s = score_code(["print('nope')", "while True: pass"], prop.tests[:2], CODING_CFG.model_copy(
        update={"sandbox": SandboxConfig(timeout_s=1.0, concurrency=2)}))
    assert s.pass_rates == [0.0, 0.0] and s.proposer_reward == 0.0


# --------------------------------------------------------------------------- grouping
def _props(valid):
    return [Proposal("p", None, v, None if v else "empty problem") for v in valid]


def test_proposer_update_schedule():
    assert [s for s in range(12) if proposer_updates(s, 5)] == [4, 9]
    assert all(proposer_updates(s, 1) for s in range(3))


def test_plan_groups_keeps_invalid_out_of_solver_training():
    cfg = SQLMConfig()
    props = _props([True, False, True, True])
    plan = plan_groups(
        4, "arithmetic", props,
        proposer_rewards=[1.0, 1.0, 0.0, 1.0],  # caller wrongly rewards the invalid one
        solver_rewards=[[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 1]],
        cfg=cfg,
    )
    assert plan.proposer_rewards == [1.0, 0.0, 0.0, 1.0]
    assert plan.proposer_group == "sqlm:4:proposer:0"
    assert plan.proposer_groups == {i: "sqlm:4:proposer:0" for i in range(4)}  # one prompt: one group
    assert plan.solver_groups == {0: "sqlm:4:solver:0", 3: "sqlm:4:solver:3"}
    assert plan.skipped[1].startswith("invalid: empty problem")
    assert plan.skipped[2] == "all solver rewards equal"


def test_plan_groups_proposer_skips():
    cfg = SQLMConfig()
    props = _props([True, True])
    off_step = plan_groups(3, "algebra", props, [1.0, 0.0], [[1, 0], [1, 0]], cfg)
    assert off_step.proposer_group is None and "every 5" in off_step.proposer_skip
    assert len(off_step.solver_groups) == 2  # the solver still trains
    flat = plan_groups(9, "algebra", props, [1.0, 1.0], [[1, 0], None], cfg)
    assert flat.proposer_group is None and flat.proposer_skip.startswith("all proposer rewards equal")
    assert flat.skipped[1] == "no solver samples"
    with pytest.raises(ValueError):
        plan_groups(0, "algebra", props, [1.0], [[1, 0], [1, 0]], cfg)


def test_plan_groups_one_proposer_group_per_prompt():
    """Reference SQLM: proposals from the same prompt form a group; a prompt whose
    proposals all scored the same has no advantage and is left out."""
    cfg = SQLMConfig(proposals_per_step=8, proposals_per_prompt=4)
    props = _props([True] * 8)
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # prompt 0 mixed, prompt 1 flat
    plan = plan_groups("4r1", "arithmetic", props, rewards, [[1, 0]] * 8, cfg, prompt_of=[0] * 4 + [1] * 4)
    assert plan.proposer_groups == {i: "sqlm:4r1:proposer:0" for i in range(4)}
    assert plan.proposer_group == "sqlm:4r1:proposer:0"


def test_plan_groups_no_label_trains_no_solvers():
    cfg = SQLMConfig()
    plan = plan_groups(0, "arithmetic", _props([True, True]), [1.0, 1.0], [[1, 0, 1, 0], [1, 1, 0, 0]], cfg,
                       no_label={1: "no clear majority"})
    assert plan.solver_groups == {0: "sqlm:0:solver:0"} and plan.skipped[1] == "no clear majority"


def test_proposals_must_fill_whole_prompts():
    with pytest.raises(ValidationError, match="multiple of"):
        SQLMConfig(proposals_per_step=6, proposals_per_prompt=4)
    assert SQLMConfig(proposals_per_step=6, proposals_per_prompt=3).proposals_per_step == 6


def test_own_topic_needs_an_answer_kind_and_uses_its_examples():
    with pytest.raises(ValidationError, match="answer_kind"):
        SQLMConfig(topic="fractions of a pizza")
    cfg = SQLMConfig(topic="fractions of a pizza", answer_kind="number", topic_examples=["What is 1/2 of 8 slices?"])
    assert cfg.kind() == "number" and SQLMConfig(topic="coding").kind() == "program"
    prompt = proposer_prompt(cfg.topic, None, seed=0, kind="number", examples=cfg.topic_examples)
    assert "Topic: fractions of a pizza" in prompt and "What is 1/2 of 8 slices?" in prompt
    assert prompt.endswith("<problem>\n")
    assert "482 + 317" not in prompt  # the built-in arithmetic examples are not mixed in
    copied = parse_proposal("What is 1/2 of 8 slices?", cfg.topic, kind="number", examples=cfg.topic_examples)
    assert not copied.valid and "copied" in copied.reason
    fresh = parse_proposal("What is 1/4 of 12 slices?", cfg.topic, kind="number", examples=cfg.topic_examples)
    assert fresh.valid
    with pytest.raises(ValueError, match="answer kind"):
        proposer_prompt("fractions of a pizza")


def test_chat_mode_stops_only_at_format_tags():
    """Completion-mode stops ("\\nProblem:", "\\n\\n\\n") would cut a chat model's solution
    before its \\boxed{}: chat prompts stop only at the format's own closing tag."""
    assert solver_stop("arithmetic", chat=True) == []
    assert proposer_stop("arithmetic", chat=True) == ["</problem>"]
    assert solver_stop("coding", chat=True) == ["```"]
    assert "\nProblem:" in solver_stop("arithmetic", chat=False)
