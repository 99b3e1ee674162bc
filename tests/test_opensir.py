"""OpenSIR prompts, parsing, rewards, group selection; embeddings and diversity."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from minisir.embed import EMPTY_DIVERSITY, Embedder, diversity_scores
from minisir.methods.opensir import OpenSIRConfig
from minisir.methods.opensir_prompts import (
    STUDENT_STOP,
    TEACHER_STOP,
    few_shot_problems,
    has_box,
    parse_teacher,
    repeats,
    student_prompt,
    teacher_prompt,
    teacher_stop,
)
from minisir.methods.opensir_rewards import (
    edge_value,
    length_score,
    select_groups,
    solvability,
    student_reward,
    teacher_reward,
)
from minisir.methods.common import answer_leak_reason, has_clear_majority

# ----------------------------------------------------------------------------- config


def test_config_defaults_and_window_validation():
    """The defaults, through what they pay: the reference's inclusive window [0.5, 0.9] peaking at 0.7
    over G = 8 students (edges worth 1/4: 4/8..7/8 are inside), and reward weights 1, 1, 1, 0.1."""
    cfg = OpenSIRConfig()
    # Worked by hand: edge + (1 - edge) * distance to the edge / distance from the edge to the peak.
    by_hand = [0.0, 0.0, 0.0, 0.0, 0.25, 0.25 + 0.75 * 0.125 / 0.2, 0.25 + 0.75 * 0.15 / 0.2,
               0.25 + 0.75 * 0.025 / 0.2, 0.0]
    got = [teacher_reward(True, k / 8, 0.0, 0.0, cfg).solvability for k in range(9)]
    assert got == pytest.approx(by_hand, abs=1e-12)
    # solvability 0.8125 + diversity 0.5 + length 128/256 + format 0.1 * 1
    assert teacher_reward(True, 6 / 8, 0.5, 128, cfg).reward == pytest.approx(0.8125 + 0.5 + 0.5 + 0.1)
    assert teacher_reward(True, 3 / 4, 0.0, 0.0, cfg, n_samples=4).solvability == pytest.approx(0.875)  # edge 1/2
    assert cfg.seeds == ["What is 1+1?"]
    with pytest.raises(ValidationError, match="solve_peak"):
        OpenSIRConfig(solve_low=0.5, solve_peak=0.95, solve_high=0.9)
    with pytest.raises(ValidationError, match="solve_low"):
        OpenSIRConfig(solve_low=0.7, solve_peak=0.7, solve_high=0.9)
    with pytest.raises(ValidationError, match="teacher_sampels"):
        OpenSIRConfig(teacher_sampels=4)  # typo: extra fields are forbidden
    with pytest.raises(ValidationError):
        OpenSIRConfig(student_samples=1)
    with pytest.raises(ValidationError):
        OpenSIRConfig(weights={"diversity": -1})


def test_sampling_per_role():
    """The teacher samples with the shared knobs; students with their own where set, else the shared ones."""
    cfg = OpenSIRConfig(temperature=0.8, top_p=0.9, teacher_max_tokens=100, student_max_tokens=200)
    assert cfg.teacher_sampling().kwargs() == {"temperature": 0.8, "top_p": 0.9, "max_tokens": 100}
    assert cfg.student_sampling().kwargs() == {"temperature": 0.8, "top_p": 0.9, "max_tokens": 200}
    own = OpenSIRConfig(temperature=0.8, student_temperature=0.3, student_top_p=0.5)
    assert own.student_sampling().kwargs() == {"temperature": 0.3, "top_p": 0.5, "max_tokens": 384}
    assert own.teacher_sampling().kwargs() == {"temperature": 0.8, "top_p": 1.0, "max_tokens": 192}
    for bad in ({"student_temperature": 0}, {"student_top_p": 1.5}, {"teacher_max_tokens": 8}):
        with pytest.raises(ValidationError):
            OpenSIRConfig(**bad)


# ----------------------------------------------------------------------------- rewards


@pytest.mark.parametrize(
    "s, expected",
    [
        (0.0, 0.0), (0.49, 0.0), (0.5, 0.0),  # below / at the low edge
        (0.6, 0.5), (0.7, 1.0), (0.8, 0.5),  # linear up to the peak and back down
        (0.9, 0.0), (0.95, 0.0), (1.0, 0.0),  # at / above the high edge
    ],
)
def test_solvability_table(s, expected):
    assert solvability(s, 0.5, 0.9, 0.7) == pytest.approx(expected)


def test_solvability_asymmetric_peak():
    assert solvability(0.875, 0.5, 1.0, 0.75) == pytest.approx(0.5)
    assert solvability(0.625, 0.5, 1.0, 0.75) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        solvability(0.5, 0.5, 0.9, 0.95)


@pytest.mark.parametrize("mean, expected", [(0, 0.0), (64, 0.25), (256, 1.0), (1000, 1.0), (-3, 0.0)])
def test_length_score(mean, expected):
    assert length_score(mean, 256) == pytest.approx(expected)


def test_teacher_reward_terms_and_invalid():
    cfg = OpenSIRConfig()
    score = teacher_reward(True, 0.7, 0.4, 128, cfg)
    assert (score.solvability, score.diversity, score.length, score.format) == pytest.approx((1.0, 0.4, 0.5, 1.0))
    w = cfg.weights
    assert score.reward == pytest.approx(w.solvability * 1.0 + w.diversity * 0.4 + w.length * 0.5 + w.format)
    dead = teacher_reward(False, 0.7, 0.4, 128, cfg)
    assert dead.reward == 0.0 and dead.solvability == dead.diversity == dead.length == dead.format == 0.0
    assert teacher_reward(True, 1.0, 0.0, 0, cfg).reward == pytest.approx(w.format)


def test_student_reward():
    assert student_reward(True, True, 0.1) == pytest.approx(1.1)
    assert student_reward(False, True, 0.1) == pytest.approx(0.1)
    assert student_reward(False, False, 0.1) == 0.0
    assert has_box("so \\boxed{4}") and not has_box("so 4") and not has_box("\\boxed{4")


# ----------------------------------------------------------------------------- parsing


def test_parse_completion_without_opening_tag():
    # prompt ended with "<problem>", sampler stopped on "</concepts>" (excluded from text)
    text = " A car goes 60 km in 1.5 hours. What is its speed?</problem>\n<concepts>rates, division"
    out = parse_teacher(text)
    assert out.valid and out.reason is None
    assert out.problem == "A car goes 60 km in 1.5 hours. What is its speed?"
    assert out.concepts == ["rates", "division"]
    start, end = out.concept_span
    assert text[start:end] == "<concepts>rates, division"


def test_parse_full_tags():
    text = "<problem>What is 3^4?</problem>\n<concepts>exponents; powers</concepts>\n"
    out = parse_teacher(text)
    assert out.valid and out.problem == "What is 3^4?" and out.concepts == ["exponents", "powers"]
    assert text[slice(*out.concept_span)] == "<concepts>exponents; powers</concepts>"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("What is 2+2? <concepts>a</concepts>", "missing </problem>"),
        ("What is 2+2?</problem> no concepts here", "missing <concepts>"),
        ("   </problem><concepts>a, b</concepts>", "empty problem"),
        ("What?</problem><concepts> , ;</concepts>", "empty concepts"),
        ("What?</problem><concepts></concepts>", "empty concepts"),
        ("A</problem><problem>B</problem><concepts>x</concepts>", "duplicate </problem>"),
        ("A</problem><concepts>x</concepts><concepts>y</concepts>", "duplicate <concepts>"),
        ("<concepts>x</concepts><problem>A</problem>", "misordered <concepts>"),
        ("A</problem><concepts>x\n\nReference problem: more text", "missing </concepts>"),
        ("A" * 3000 + "</problem><concepts>x</concepts>", "problem too long"),
        ("A</problem><concepts>" + "x" * 400 + "</concepts>", "concepts too long"),
        ("A</problem><concepts>" + ", ".join("abcdefghij") + "</concepts>", "concepts too long"),
        ("Compute 2+2. \\boxed{4}</problem><concepts>x</concepts>", "problem contains an answer"),
        ("", "missing </problem>"),
    ],
)
def test_parse_malformed(text, reason):
    out = parse_teacher(text)
    assert not out.valid and out.reason == reason


def test_parse_truncated_output_rejected():
    out = parse_teacher("What is 2+2?</problem><concepts>addition", finish_reason="length")
    assert not out.valid and out.reason == "truncated"
    out = parse_teacher("What is 2+2?</problem><concepts>addition", finish_reason="loop")
    assert not out.valid and out.reason == "looped"


# ----------------------------------------------------------------------------- prompts


def test_completion_prompts_end_where_the_model_writes():
    p = teacher_prompt("What is 1+1?", ["Find the area of a circle of radius 2."])
    assert p.endswith("Reference problem: What is 1+1?\n<problem>")
    assert "Find the area of a circle of radius 2." in p
    # every few-shot item is itself parseable the way the model's output will be
    items = p.split("\n<problem>")[1:-1]
    assert len(items) == len(few_shot_problems())
    for item in items:
        out = parse_teacher(item.split("\n\n", 1)[0])
        assert out.valid and out.problem in few_shot_problems()
    # stop strings cut the model before it starts the next item
    assert any(s in "\nReference problem: x" for s in TEACHER_STOP)
    s = student_prompt("What is  2 +\n 3?")
    assert s.endswith("Problem: What is 2 + 3?\nSolution:")
    assert "\\boxed{" in s and any(stop in "\nProblem: next" for stop in STUDENT_STOP)


def test_chat_prompts_use_template():
    seen = []

    def chat(messages):
        seen.append(messages)
        return "<chat>" + messages[-1]["content"] + "</chat>"

    t = teacher_prompt("What is 1+1?", ["old problem"], chat=chat)
    assert t.startswith("<chat>") and "<problem>" in t and "old problem" in t
    s = student_prompt("What is 2+3?", chat=chat)
    assert s.startswith("<chat>") and "\\boxed" in s
    assert len(seen) == 2 and seen[0][0]["role"] == "user"


def test_chat_teacher_explains_first_when_think_is_on():
    t = teacher_prompt("What is 1+1?", chat=lambda m: m[-1]["content"], think=True)
    assert "<think>" in t and t.index("<think>") < t.index("<problem>")
    assert "<think>" not in teacher_prompt("What is 1+1?", chat=lambda m: m[-1]["content"], think=False)
    assert OpenSIRConfig().uses_think(chat=True) and not OpenSIRConfig().uses_think(chat=False)
    assert OpenSIRConfig(think=False).uses_think(chat=True) is False


def test_parse_records_the_think_block():
    good = parse_teacher("<think>uses area, not sums</think>\n<problem>A square has side 4 cm. What is its area?"
                         "</problem>\n<concepts>area</concepts>")
    assert good.valid and good.has_think and good.problem == "A square has side 4 cm. What is its area?"
    bare = parse_teacher("<problem>A square has side 4 cm. What is its area?</problem>\n<concepts>area</concepts>")
    assert bare.valid and not bare.has_think
    empty = parse_teacher("<think> </think><problem>A square has side 4 cm. What is its area?</problem>"
                          "<concepts>area</concepts>")
    assert not empty.has_think
    no_open = parse_teacher("<think>why</think> What is 6 times 7 plus 2?</problem><concepts>x</concepts>")
    assert no_open.problem == "What is 6 times 7 plus 2?" and no_open.has_think


def test_format_term_requires_think_only_when_asked():
    cfg = OpenSIRConfig()
    assert teacher_reward(True, 0.7, 0.3, 10, cfg, formatted=False).format == 0.0
    assert teacher_reward(True, 0.7, 0.3, 10, cfg, formatted=True).format == 1.0


def test_chat_teacher_has_no_completion_stops():
    assert teacher_stop(chat=True) == [] and "</concepts>" in teacher_stop(chat=False)


# ----------------------------------------------------------------------------- reference rewards


@pytest.mark.parametrize("g, expected", [(8, 0.25), (4, 0.5), (10, 0.2), (2, 1.0)])
def test_edge_value_counts_reachable_rates(g, expected):
    # G=8: 4/8, 5/8, 6/8, 7/8 lie in [0.5, 0.9]; G=4: 2/4, 3/4; G=10: 5/10..9/10; G=2: 1/2
    assert edge_value(0.5, 0.9, g) == pytest.approx(expected)


@pytest.mark.parametrize(
    "rate, expected",
    [(3 / 8, 0.0), (4 / 8, 0.25), (5 / 8, 0.25 + 0.75 * 0.125 / 0.2), (0.7, 1.0),
     (6 / 8, 1 - 0.75 * 0.05 / 0.2), (7 / 8, 0.25 + 0.75 * 0.025 / 0.2), (0.9, 0.25), (1.0, 0.0)],
)
def test_reference_solvability_for_eight_students(rate, expected):
    """The reference window is inclusive and its edges are worth 1/4 at G = 8: a 4/8 vote
    earns something, 8/8 nothing."""
    cfg = OpenSIRConfig(weights={"diversity": 0, "length": 0, "format": 0})
    score = teacher_reward(True, rate, 0.0, 0.0, cfg, n_samples=8)
    assert score.solvability == pytest.approx(expected)
    zero = OpenSIRConfig(solvability_edges="zero")
    assert teacher_reward(True, 0.5, 0.0, 0.0, zero, n_samples=8).solvability == 0.0


def test_length_term_is_zero_when_no_student_answer_parsed():
    cfg = OpenSIRConfig(length_cap=100)
    assert cfg.weights.length == 1.0  # reference weight
    rambling = teacher_reward(True, 0.0, 0.2, 100.0, cfg, any_parsed=False)
    assert rambling.length == 0.0
    assert teacher_reward(True, 0.0, 0.2, 100.0, cfg.model_copy(update={"length_zero_unparsed": False}),
                          any_parsed=False).length == 1.0
    assert teacher_reward(True, 0.6, 0.2, 50.0, cfg).length == pytest.approx(0.5)


@pytest.mark.parametrize(
    "problem, answer, reason_part",
    [
        ("The caravan exhibits a total of 7 caravans at random.", "7", "appears in the problem"),
        ("2 is divisible by 3 and 2 is divisible by 5, which is odd.", "2", "appears in the problem"),
        ("0 = 0", "0", "shorter than"),
        ("A shop sells 1,200 pens a week. How many pens does it sell?", "1200", "appears in the problem"),
        ("Tom has 12 apples and eats 5 of them. How many are left?", "seven", "no digit"),
        ("Tom has 12 apples and eats 5 of them. How many are left?", None, "no majority answer"),
        ("Tom has 12 apples and <b>eats</b> 5 of them. How many are left?", "7", "tag"),
    ],
)
def test_answer_leak_reason_catches_non_questions(problem, answer, reason_part):
    assert reason_part in answer_leak_reason(problem, answer)


@pytest.mark.parametrize(
    "problem, answer",
    [("Tom has 12 apples and eats 5 of them. How many are left?", "7"),
     ("Tom has 12 apples and eats 5 of them. How many are left?", "7.0"),
     ("What is 10 - 5 more than three times four?", "\\frac{17}{1}")],
)
def test_answer_leak_reason_accepts_real_questions(problem, answer):
    assert answer_leak_reason(problem, answer) is None


@pytest.mark.parametrize(
    "answers, clear",
    [(["3", "3", "4", "5"], True), (["3", "3", "4", "4"], False), (["1", "2", "3", "4"], False),
     (["3", None, None, None], False), (["3", "3.0", None, "4"], True), (["7", "7", "7", "7"], True)],
)
def test_clear_majority(answers, clear):
    assert has_clear_majority(answers) is clear


# ----------------------------------------------------------------------------- groups


def test_select_groups():
    teacher = {
        "ref-a": [1.0, 1.0, 1.0, 1.0],  # zero variance: never picked
        "ref-b": [0.0, 1.0, 0.0, 1.0],  # variance 0.25
        "ref-c": [0.0, 2.0, 0.0, 0.0],  # variance 0.75
        "ref-d": [0.0, 2.0, 0.0, 0.0],  # tie with c: c comes first
    }
    problems = {"p1": 0.5, "p2": None, "p3": 1.7, "p4": 1.7, "p5": 0.1}
    t, s = select_groups(teacher, problems, n_teacher=1, n_student=1)
    assert t == ["ref-c"] and s == ["p3"]
    t, s = select_groups(teacher, problems, n_teacher=3, n_student=3)
    assert t == ["ref-c", "ref-d", "ref-b"] and s == ["p3", "p4", "p1"]
    t, s = select_groups(teacher, problems, n_teacher=10, n_student=10)
    assert "ref-a" not in t and "p2" not in s and len(s) == 4
    assert select_groups({}, {}, 1, 1) == ([], [])
    # with student rewards known, problems whose students all agree are skipped
    students = {"p3": [1.1, 1.1, 1.1], "p4": [1.1, 0.0, 1.1], "p1": [0.0, 1.1]}
    assert select_groups(teacher, problems, 1, 2, student_rewards=students)[1] == ["p4", "p1"]


# ----------------------------------------------------------------------------- diversity


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_diversity_hand_computed():
    ref = _unit([[1, 0, 0], [0, 1, 0]])
    new = _unit([[1, 0, 0], [0, 0, 1]])
    # row 0: sims ref [1, 0], other new [0] -> top2 = [1, 0] -> mean 0.5 -> 0.25
    # row 1: sims ref [0, 0], other new [0] -> mean 0 -> 0.5
    np.testing.assert_allclose(diversity_scores(new, ref, top_k=2), [0.25, 0.5], atol=1e-6)
    # top_k larger than the neighbours available: use all 3
    np.testing.assert_allclose(diversity_scores(new, ref, top_k=10), [(1 - 1 / 3) / 2, 0.5], atol=1e-6)


def test_diversity_batch_duplicates_and_empty_cases():
    dup = _unit([[0, 1, 0], [0, 1, 0]])
    # empty archive: duplicates in the batch see each other (cosine 1 -> diversity 0)
    np.testing.assert_allclose(diversity_scores(dup, np.zeros((0, 3), np.float32)), [0.0, 0.0], atol=1e-6)
    # alone with nothing to compare to
    assert diversity_scores(dup[:1], None)[0] == EMPTY_DIVERSITY
    # opposite vectors -> 1.0
    np.testing.assert_allclose(diversity_scores(_unit([[1, 0]]), _unit([[-1, 0]]), top_k=1), [1.0], atol=1e-6)
    assert diversity_scores(np.zeros((0, 3), np.float32), dup).shape == (0,)
    with pytest.raises(ValueError):
        diversity_scores(dup, np.zeros((4, 5), np.float32))


def test_diversity_matches_bruteforce():
    rng = np.random.default_rng(0)
    ref = _unit(rng.standard_normal((300, 16)))
    new = _unit(rng.standard_normal((7, 16)))
    got = diversity_scores(new, ref, top_k=5)
    for i in range(7):
        sims = list(ref @ new[i]) + [float(new[j] @ new[i]) for j in range(7) if j != i]
        expected = (1 - np.mean(sorted(sims)[-5:])) / 2
        assert got[i] == pytest.approx(expected, abs=1e-5)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_embedder_real_model(embedder):
    vecs = embedder.encode(
        ["What is 2 + 3?", "Compute the sum of 2 and 3.", "A circle has radius 4; find its area."]
    )
    assert vecs.dtype == np.float32 and vecs.shape == (3, embedder.dim) and embedder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]  # paraphrases are closer
    assert embedder.encode([]).shape == (0, 384)
    div = diversity_scores(vecs[2:], vecs[:2], top_k=2)
    near = diversity_scores(vecs[1:2], vecs[:1], top_k=1)
    assert div[0] > near[0]


def test_groups_rank_by_solvability_plus_diversity_not_length():
    """Reference group choice: length and format do not decide which students train, so the
    students learn from problems whose majority label is reliable, not from long ones."""
    from minisir.methods.opensir import _rank_value
    from minisir.methods.opensir_rewards import TeacherScore

    cfg = OpenSIRConfig()
    long_unreliable = {"score": TeacherScore(0.25, 0.1, 1.0, 1.0, 0.25 + 0.1 + 1.0 + 0.1)}
    short_reliable = {"score": TeacherScore(1.0, 0.1, 0.1, 1.0, 1.0 + 0.1 + 0.1 + 0.1)}
    problems = {"long": _rank_value(long_unreliable, cfg), "short": _rank_value(short_reliable, cfg)}
    assert select_groups({}, problems, 0, 1)[1] == ["short"]
    by_reward = OpenSIRConfig(group_rank="reward")
    problems = {"long": _rank_value(long_unreliable, by_reward), "short": _rank_value(short_reliable, by_reward)}
    assert select_groups({}, problems, 0, 1)[1] == ["long"]
    assert _rank_value(None, cfg) == 0.0  # an unparsed candidate counts as 0 in its teacher group


# ----------------------------------------------------------------------------- fenced format, graded reward
from minisir.methods.opensir import teacher_value  # noqa: E402
from minisir.methods.opensir_prompts import (FENCED_STOP, TEACHER_EXAMPLES, fenced_teacher_prompt,  # noqa: E402
                                             parse_fenced)


def test_fenced_prompt_items_parse_as_the_model_output_will():
    """Every few-shot item of the fenced prompt, cut where the sampler's stop strings would cut
    the model, parses to its problem and program; the prompt ends where the model writes."""
    p = fenced_teacher_prompt("What is 1+1?", ["Find the area of a circle of radius 2."], program=True)
    assert p.endswith("Reference problem: What is 1+1?\nNew problem:") and "Find the area of a circle" in p
    items = p.split("\nNew problem:")[1:-1]
    assert len(items) == len(few_shot_problems())
    for item in items:
        cut = min(item.find(s) for s in FENCED_STOP if s in item)  # the sampler excludes the stop string
        out = parse_fenced(item[:cut], "stop", program=True)
        assert out.valid and out.problem in few_shot_problems() and out.program.startswith(("width", "print"))
    assert "<problem>" not in p and "<concepts>" not in p
    assert teacher_stop(False, fenced=True, program=True) == list(FENCED_STOP)
    assert teacher_stop(True, fenced=True, program=True) == []


def test_a_recipes_teacher_examples_are_the_prompts_worked_examples():
    """method.teacher_examples replaces the default worked examples in both completion formats, each
    item parses back to the recipe's problem and program, and the diversity reference is those problems."""
    from minisir.methods.opensir import OpenSIRConfig

    examples = [{"reference": "What is 1+1?", "problem": "What is 23 * 4 - 17?", "concepts": "order of operations",
                 "program": "print(23 * 4 - 17)"},
                {"reference": "What is 9 - 3?", "problem": "A box holds 12 eggs. How many eggs are in 7 boxes?",
                 "concepts": "multiplication", "program": "print(12 * 7)"}]
    cfg = OpenSIRConfig(labels="program", teacher_format="fenced", teacher_examples=examples, min_problem_chars=12)
    shots = cfg.shots()
    assert few_shot_problems(shots) == [e["problem"] for e in examples]
    fenced = fenced_teacher_prompt("What is 5 + 5?", [], True, shots)
    tags = teacher_prompt("What is 5 + 5?", [], None, False, True, shots)
    for default in few_shot_problems():
        assert default not in fenced and default not in tags
    items = fenced.split("\nNew problem:")[1:-1]
    assert len(items) == 2
    for item, example in zip(items, examples):
        cut = min(item.find(s) for s in FENCED_STOP if s in item)
        out = parse_fenced(item[:cut], "stop", program=True)
        assert (out.problem, out.program) == (example["problem"], example["program"])
    assert "<concepts>order of operations</concepts>" in tags and "<program>\nprint(12 * 7)\n</program>" in tags
    assert OpenSIRConfig().shots() == TEACHER_EXAMPLES  # the defaults, when a recipe names none
    with pytest.raises(ValueError, match="20 characters, shorter than min_problem_chars"):
        OpenSIRConfig(labels="program", teacher_format="fenced", teacher_examples=examples)  # reference's 30
    assert OpenSIRConfig(labels="program", teacher_format="fenced", teacher_examples=examples, leak_filter=False)


@pytest.mark.parametrize("text, program, reason", [
    ("", True, "empty problem"),
    (" What is 2+2?\nno block here", True, "missing ```python block"),
    (" What is 2+2?\n```python\n\n", True, "empty program"),
    (" Compute 2+2. \\boxed{4}\n```python\nprint(4)", True, "problem contains an answer"),
    (" " + "A" * 3000, False, "problem too long"),
])
def test_parse_fenced_refuses_with_a_reason(text, program, reason):
    out = parse_fenced(text, "stop", program)
    assert not out.valid and out.reason == reason


def test_parse_fenced_reads_problem_and_program():
    out = parse_fenced(" Tom has 35 marbles and gives 12 away. How many are left?\n```python\nleft = 35 - 12\n"
                       "print(left)", "stop", program=True)
    assert out.valid and out.problem == "Tom has 35 marbles and gives 12 away. How many are left?"
    assert out.program == "left = 35 - 12\nprint(left)" and out.concepts == [] and out.concept_span is None
    assert parse_fenced(" What is 7 * 8?", "stop", program=False).problem == "What is 7 * 8?"
    assert parse_fenced(" What is 7 * 8?\n```python\nprint(56)", "length", program=True).reason == "truncated"
    assert parse_fenced(" What is 7 * 8?\n```python\nprint(56)", "loop", program=True).reason == "looped"


def _stats(admitted: bool, leak: str | None = None, reward: float = 1.7) -> dict:
    from minisir.methods.opensir_rewards import TeacherScore

    return {"score": TeacherScore(0.8, 0.4, 0.4, 0.1, reward), "admitted": admitted, "leak": leak, "refused": None}


def test_graded_teacher_reward_has_spread_where_the_reference_has_none():
    """Absolute Zero's shape: an unparsed output or a leak -1, a valid problem outside the window
    -0.5, one inside it the reference sum. A group where nothing parsed but one problem fell just
    outside the window trains under graded rewards and not under the reference's."""
    graded = OpenSIRConfig(teacher_grading="graded")
    group = [None, _stats(False, leak="answer copied", reward=0.0), _stats(False, reward=0.0), _stats(True)]
    assert [teacher_value(st, graded) for st in group] == [-1.0, -1.0, -0.5, 1.7]
    assert [teacher_value(st, OpenSIRConfig()) for st in group] == [0.0, 0.0, 0.0, 1.7]
    failing = [None, None, _stats(False, reward=0.0), None]
    assert len({teacher_value(st, OpenSIRConfig()) for st in failing}) == 1  # no spread, nothing to learn
    assert {teacher_value(st, graded) for st in failing} == {-1.0, -0.5}


def test_repeats_sees_a_copy_through_case_and_spacing_only():
    shown = ["What is 10+15?", "A box holds 6 eggs. How many eggs are in 5 boxes?"]
    assert repeats("What is 10 + 15 ?", shown) and repeats("what is 10+15?", shown)
    assert repeats("A box holds 6 eggs.  How many eggs are in 5 boxes?", shown)
    assert not repeats("What is 10 + 16?", shown) and not repeats("What is 10 - 15?", shown)
    assert not repeats("What is 10 + 15?", [])


def test_a_round_refuses_copies_of_what_its_prompt_showed_before_labels_or_students():
    """The bundled model's teacher learned to hand back its reference (RESULTS.md, eighth sitting): a
    copy is refused at parsing, so no program runs and no student samples it, and under graded rewards
    it scores -1 beside -0.5 for a new problem outside the window, so a group that copies has spread."""
    from types import SimpleNamespace

    from minisir.methods.opensir import _metrics, _parse, _Round, teacher_value
    from minisir.methods.opensir_prompts import NOT_NEW
    from minisir.step_metrics import summary_line

    def completion(text: str) -> SimpleNamespace:
        return SimpleNamespace(text=text, finish_reason="stop", token_ids=[1, 2], rank=None)

    for refuse in (True, False):
        r = _Round.__new__(_Round)
        r.cfg = OpenSIRConfig(teacher_format="fenced", labels="program", refuse_copies=refuse)
        r.fenced, r.labelled, r.prefix, r.copies = True, True, "4", 0
        r.shown = [["What is 10+15?", "What is 9 * 4?", *few_shot_problems(r.cfg.shots())]]
        r.teacher = [[completion(" What is 10 + 15 ?\n```python\nprint(10 + 15)\n```"),
                      completion(" WHAT IS 9 * 4?\n```python\nprint(9 * 4)\n```"),
                      completion(" What is 10 + 16?\n```python\nprint(10 + 16)\n```")]]
        _parse(r)
        assert [x[2].problem for x in r.parsed] == (["What is 10 + 16?"] if refuse else
                                                     ["What is 10 + 15 ?", "WHAT IS 9 * 4?", "What is 10 + 16?"])
        assert [x[2].reason for x in r.cands] == ([NOT_NEW, NOT_NEW, None] if refuse else [None] * 3)
        r.stats, r.executed, r.problems, r.pool_phase, r.teacher_ids, r.student_keys = {}, {}, [], False, [], []
        r.teacher_tps = r.student_tps = 0.0
        assert _metrics(r)["copy_rate"] == (2 / 3 if refuse else 0.0)
        assert ("copies 0.67" in summary_line(4, _metrics(r))) == refuse  # the step line says so when any
    assert teacher_value(None, OpenSIRConfig(teacher_grading="graded")) == -1.0  # a copy has no stats
