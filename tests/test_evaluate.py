"""Benchmarks, answer checking, metrics and a real (tiny) eval of the bundled model."""

from __future__ import annotations

import json
import math
import random
import re
from fractions import Fraction

import pytest
from pydantic import ValidationError

from minisir import evaluate as E
from minisir.archive import Archive
from minisir.errors import MinisirError


def _number(s: str) -> Fraction:
    return Fraction(s)  # raises on anything that is not a plain number


# ------------------------------------------------------------------ answers / formats
@pytest.mark.parametrize(
    "raw, ref",
    [("So it costs 1200.\n#### 1,200", "1200"), ("#### 140", "140"), ("####  -3", "-3"),
     ("\\boxed{3/4}", "3/4"), (42, "42"), ("7 dollars", "7"), ("#### 3.5", "3.5")],
)
def test_reference_answer_formats(raw, ref):
    assert E.reference_answer(raw) == ref


def test_is_correct_uses_boxed_answer():
    assert E.is_correct("It is 1,200 in total, so \\boxed{1,200}.", E.reference_answer("#### 1,200"))
    assert E.is_correct("\\boxed{1200.0}", "1200")
    assert E.is_correct("\\boxed{\\$1200}", "1200")
    assert E.is_correct("\\boxed{7/2}", "3.5")
    assert not E.is_correct("The answer is 1200.", "1200")  # no box: same rule as training
    assert not E.is_correct("\\boxed{1201}", "1200")


# ------------------------------------------------------------------ GSM8K-100
def test_gsm8k_100_loads_all_questions_with_numeric_answers():
    qs = E.load_benchmark("gsm8k-100")
    assert len(qs) == 100
    assert len({q.id for q in qs}) == 100
    fog = next(q for q in qs if q.question.startswith("A fog bank"))
    assert fog.answer == "140"
    for q in qs:
        value = _number(q.answer)
        assert q.question.endswith("?") or len(q.question) > 40
        # the reference is found in its boxed form, with thousands separators too
        assert E.is_correct(f"\\boxed{{{q.answer}}}", q.answer)
        if value.denominator == 1 and abs(value) >= 1000:
            assert E.is_correct(f"\\boxed{{{int(value):,}}}", q.answer)


def test_gsm8k_subset_is_seeded_and_stable():
    a = [q.id for q in E.load_benchmark("gsm8k-100", n=5, seed=1)]
    assert a == [q.id for q in E.load_benchmark("gsm8k-100", n=5, seed=1)]
    assert a != [q.id for q in E.load_benchmark("gsm8k-100", n=5, seed=2)]
    assert a == sorted(a) and len(set(a)) == 5


# ------------------------------------------------------------------ GSM-Symbolic
@pytest.fixture(scope="module")
def symbolic():
    return E.load_gsm_symbolic(100, seed=7)


def test_gsm_symbolic_variants_satisfy_conditions_and_answers(symbolic):
    qs, skipped = symbolic
    assert len(qs) == 100
    assert "0095" in skipped and "Subscript" in skipped["0095"]  # uses x[1] on an int: skipped, counted
    assert len(skipped) <= 5
    templates = {stem: E.parse_template(stem, d) for stem, d in E._gsm_files()}
    assert len({q.meta["template"] for q in qs}) >= 90  # round-robin over templates
    for q in qs:
        _number(q.answer)
        assert "{" not in q.question, q.question  # every placeholder rendered
        tpl = templates[q.meta["template"]]
        # recompute from the rendered variable values, in a fresh environment
        env = {k: E._as_value(v) for k, v in q.meta["values"].items()}
        ev = E.SafeEval(env, E._Funcs(random.Random(0)).table)
        try:
            conds = [ev(c) for c in tpl.conditions]
            answer = E.format_number(ev(tpl.answer))
        except E.TemplateError:
            continue  # a condition on a non-numeric list variable; covered by the sampler itself
        assert all(conds), (q.id, tpl.conditions, q.meta)
        assert E.equivalent(answer, q.answer), (q.id, answer, q.answer)


def test_gsm_symbolic_fog_template_by_hand(symbolic):
    """Template 0001: "It takes t minutes to cover every d miles... the city is y miles"."""
    qs, _ = symbolic
    tpl = E.parse_template("0001", dict(E._gsm_files())["0001"])
    fogs = [(q.question, q.answer) for q in qs if q.meta["template"] == "0001"]
    fogs += [E.sample_variant(tpl, random.Random(i))[:2] for i in range(10)]
    assert len(fogs) == 11 and len(set(fogs)) > 5
    for text, answer in fogs:
        found = re.search(r"takes (\d+) minutes to cover every (\d+) miles.*?is (\d+) miles", text)
        t, d, y = map(int, found.groups())
        assert y % d == 0
        assert int(answer) == y // d * t


def test_gsm_symbolic_is_seeded():
    a, _ = E.load_gsm_symbolic(10, seed=3)
    b, _ = E.load_gsm_symbolic(10, seed=3)
    c, _ = E.load_gsm_symbolic(10, seed=4)
    assert [(q.question, q.answer) for q in a] == [(q.question, q.answer) for q in b]
    assert [q.question for q in a] != [q.question for q in c]


@pytest.mark.parametrize(
    "expr",
    ["__import__('os')", "().__class__", "x.y", "(lambda: 1)()", "[i for i in range(3)]",
     "10 ** 10 ** 10", "open('f')", "'a' * 1000", "x[0]"],
)
def test_safe_eval_rejects_everything_else(expr):
    ev = E.SafeEval({"x": [1, 2]}, E._Funcs(random.Random(0)).table)
    with pytest.raises(E.TemplateError):
        ev(expr)


def test_safe_eval_is_exact():
    ev = E.SafeEval({"a": 7, "b": Fraction(1, 10)}, E._Funcs(random.Random(0)).table)
    assert ev("is_int(a * 3 * b * 10 / 3)") is True  # 0.1 * 3 would fail with floats
    assert ev("a // 2 + (1 if a > 5 else 0)") == 4
    assert ev("3 < a <= 7 and divides(a * 2, 7)") is True


# ------------------------------------------------------------------ arithmetic
def test_arithmetic_answers_are_correct():
    qs = E.load_benchmark("arithmetic", n=50, seed=5)
    assert len(qs) == 50
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    kinds = set()
    for q in qs:
        toks = re.findall(r"\d+|[-+*/]", q.question)
        value = Fraction(int(toks[0]))
        for op, num in zip(toks[1::2], toks[2::2]):  # left to right: all templates are written that way
            value = ops[op](value, Fraction(int(num)))
        assert value.denominator == 1 and str(value.numerator) == q.answer, q
        kinds.add(q.meta["kind"])
    assert kinds == {"mul", "add", "sub", "div", "mix"}
    assert any(re.fullmatch(r"What is \d{3} \* \d{3}\?", q.question) for q in qs)
    assert [q.question for q in qs] == [q.question for q in E.load_arithmetic(50, 5)]


# Recorded from the code before arithmetic got levels: plain `arithmetic` (= hard) must stay
# byte-identical, so evals stored in old archives still pair up question by question.
ARITHMETIC_BEFORE_LEVELS = {
    0: [("arithmetic-0-0", "What is 637 * 255?", "162435", "mul"),
        ("arithmetic-0-1", "What is 577 + 806 + 3196?", "4579", "add"),
        ("arithmetic-0-2", "What is 4883 - 319?", "4564", "sub"),
        ("arithmetic-0-3", "What is 33602 / 53?", "634", "div"),
        ("arithmetic-0-4", "What is 416 * 45 - 451?", "18269", "mix"),
        ("arithmetic-0-5", "What is 418 * 300?", "125400", "mul"),
        ("arithmetic-0-6", "What is 314 + 120 + 4015?", "4449", "add")],
    5: [("arithmetic-5-0", "What is 770 * 947?", "729190", "mul"),
        ("arithmetic-5-1", "What is 511 + 126 + 2630?", "3267", "add"),
        ("arithmetic-5-2", "What is 3373 - 682?", "2691", "sub"),
        ("arithmetic-5-3", "What is 19320 / 28?", "690", "div"),
        ("arithmetic-5-4", "What is 743 * 52 - 540?", "38096", "mix"),
        ("arithmetic-5-5", "What is 699 * 254?", "177546", "mul"),
        ("arithmetic-5-6", "What is 217 + 723 + 1331?", "2271", "add")],
}
# sha256 of "id\tquestion\tanswer" lines of the default 100 questions, seed 0, same recording
ARITHMETIC_BEFORE_SHA = "cf5946cac05a4249e291b937c8c0a0cc22abda4fe8f0d3aa53945a09f2013fbe"


@pytest.mark.parametrize("name", ["arithmetic", "arithmetic-hard"])
def test_arithmetic_unchanged_by_levels(name):
    import hashlib

    for seed, rows in ARITHMETIC_BEFORE_LEVELS.items():
        qs = E.load_benchmark(name, n=7, seed=seed)
        assert [(q.id, q.question, q.answer, q.meta["kind"]) for q in qs] == rows
        assert all(q.meta["level"] == "hard" for q in qs)
    qs = E.load_benchmark(name)
    text = "\n".join(f"{q.id}\t{q.question}\t{q.answer}" for q in qs)
    assert hashlib.sha256(text.encode()).hexdigest() == ARITHMETIC_BEFORE_SHA


def _solve_expression(question: str) -> Fraction:
    """Independent check of "What is a op b op c?": usual precedence (* and / first)."""
    body = re.fullmatch(r"What is ([\d +\-*/]+)\?", question).group(1)
    toks = body.split()
    assert all(re.fullmatch(r"\d+", t) for t in toks[::2]) and all(t in "+-*/" for t in toks[1::2]), question
    terms, ops = [Fraction(int(toks[0]))], []
    for op, num in zip(toks[1::2], toks[2::2]):
        if op == "*":
            terms[-1] *= int(num)
        elif op == "/":
            terms[-1] /= int(num)
        else:
            ops.append(op)
            terms.append(Fraction(int(num)))
    value = terms[0]
    for op, t in zip(ops, terms[1:]):
        value = value + t if op == "+" else value - t
    return value


# (pattern, answer from the numbers in text order) for every word template, written from the text
WORD_SOLUTIONS = {
    "buy": (r"buys (\d+) .*?costs (\d+) dollars", lambda n, p: n * p),
    "share": (r"shares (\d+) .*?among (\d+) friends", lambda t, f: Fraction(t, f)),
    "more": (r"has (\d+) .*?gets (\d+) more", lambda a, b: a + b),
    "less": (r"has (\d+) .*?gives away (\d+)", lambda a, b: a - b),
    "change": (r"buys (\d+) .*?cost (\d+) dollars each and pays with (\d+) dollars", lambda n, p, m: m - n * p),
    "packs": (r"has (\d+) .*?buys (\d+) packs with (\d+)", lambda h, k, per: h + k * per),
    "share-give": (r"shares (\d+) .*?among (\d+) friends.*?gives (\d+)", lambda t, f, g: Fraction(t, f) - g),
    "two-days": (r"collects (\d+) .*?and (\d+) .*?uses (\d+)", lambda a, b, u: a + b - u),
}


@pytest.mark.parametrize("level", ["easy", "medium"])
def test_arithmetic_levels_answers_are_correct(level):
    qs = E.load_benchmark(f"arithmetic-{level}", n=200, seed=3)
    assert len(qs) == 200 and len({q.id for q in qs}) == 200 and len({q.question for q in qs}) > 150
    for q in qs:
        assert q.meta["level"] == level and q.id.startswith(f"arithmetic-{level}-3-")
        assert re.fullmatch(r"\d+", q.answer), q  # exact, non-negative integer
        if q.meta["kind"] == "word":
            pattern, solve = WORD_SOLUTIONS[q.meta["template"]]
            found = re.search(pattern, q.question)
            assert found, (q.meta, q.question)
            value = Fraction(solve(*map(int, found.groups())))
        else:
            value = _solve_expression(q.question)
        assert value.denominator == 1 and value >= 0 and str(value.numerator) == q.answer, q


def test_arithmetic_levels_kinds_balanced_and_seeded():
    easy = E.load_benchmark("arithmetic-easy", n=100, seed=0)
    medium = E.load_benchmark("arithmetic-medium", n=100, seed=0)
    from collections import Counter

    assert Counter(q.meta["kind"] for q in easy) == {k: 20 for k in ("add", "sub", "mul", "div", "word")}
    assert Counter(q.meta["kind"] for q in medium) == {k: 25 for k in ("add-sub", "mul", "mix", "word")}
    assert [q.meta["kind"] for q in easy[:5]] == ["add", "sub", "mul", "div", "word"]  # round-robin
    assert Counter(q.meta["template"] for q in easy if "template" in q.meta) == {t: 5 for t in E.EASY_WORD}
    assert sorted(Counter(q.meta["template"] for q in medium if "template" in q.meta).values()) == [6, 6, 6, 7]
    for name in ("arithmetic-easy", "arithmetic-medium"):
        a = E.load_benchmark(name, n=30, seed=9)
        assert [(q.id, q.question, q.answer) for q in a] == [(q.id, q.question, q.answer)
                                                            for q in E.load_benchmark(name, n=30, seed=9)]
        assert [q.question for q in a] != [q.question for q in E.load_benchmark(name, n=30, seed=10)]
        # each question has its own rng: asking for more questions keeps the first ones
        assert [q.question for q in a] == [q.question for q in E.load_benchmark(name, n=60, seed=9)[:30]]
    # levels never share ids, so compare() refuses to pair an easy eval with a hard one
    assert not {q.id for q in easy} & {q.id for q in E.load_benchmark("arithmetic", n=100, seed=0)}
    assert not {q.id for q in easy} & {q.id for q in medium}


def test_arithmetic_easy_numbers_below_100_and_medium_shapes():
    for q in E.load_benchmark("arithmetic-easy", n=300, seed=4):
        numbers = [int(x) for x in re.findall(r"\d+", q.question)]
        if q.meta["kind"] == "div":  # times tables backwards: dividend up to 12 * 12
            dividend, divisor = numbers
            assert 2 <= divisor <= 12 and 2 <= dividend // divisor <= 12 and dividend <= 144
        else:
            assert all(x < 100 for x in numbers), q.question
        if q.meta["kind"] in ("add", "sub"):
            assert all(10 <= x <= 99 for x in numbers)
        if q.meta["kind"] == "mul":
            assert all(2 <= x <= 12 for x in numbers)
    for q in E.load_benchmark("arithmetic-medium", n=300, seed=4):
        numbers = [int(x) for x in re.findall(r"\d+", q.question)]
        assert all(x <= 100 for x in numbers), q.question
        if q.meta["kind"] in ("mul", "mix"):
            a, b = numbers[:2]
            assert min(a, b) <= 12 and 10 <= max(a, b) <= 99
        if q.meta["kind"] == "add-sub":
            assert all(10 <= x <= 99 for x in numbers)
    with pytest.raises(MinisirError, match="unknown benchmark"):
        E.load_benchmark("arithmetic-expert")
    with pytest.raises(MinisirError, match="level"):
        E.load_arithmetic(5, 0, "expert")
    assert {"arithmetic-easy", "arithmetic-medium", "arithmetic-hard", "arithmetic"} <= set(E.BENCHMARKS)


# ------------------------------------------------------------------ JSONL
def test_jsonl_good_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"question": "2+2?", "answer": 4, "kind": "add", "level": 1},
            {"id": "x", "question": "Big?", "answer": "It is\n#### 1,200"},
            {"question": "Half?", "answer": "\\boxed{\\frac{1}{2}}"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    qs = E.load_benchmark(str(path))
    assert [q.answer for q in qs] == ["4", "1200", "\\frac{1}{2}"]
    assert qs[1].id == "x" and qs[0].id == "mine-1"
    assert qs[0].meta == {"kind": "add", "level": 1} and qs[1].meta == {}  # extra fields are kept
    assert E.is_correct("\\boxed{0.5}", qs[2].answer)


@pytest.mark.parametrize(
    "lines, needle",
    [(['{"question": "a", "answer": 1}', "{not json"], "line 2"),
     (['{"question": "a", "answer": 1}', '{"question": "b"}'], "line 2: field 'answer'"),
     (['{"answer": 3}'], "line 1: field 'question'"),
     (['[1, 2]'], "line 1"),
     (['{"question": "a", "answer": ""}'], "line 1: field 'answer'")],
)
def test_jsonl_bad_rows_name_file_and_line(tmp_path, lines, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MinisirError) as err:
        E.load_benchmark(str(path))
    assert str(path) in str(err.value) and needle in str(err.value)


def test_unknown_benchmark_and_config_validation(tmp_path):
    with pytest.raises(MinisirError, match="unknown benchmark"):
        E.load_benchmark("gsm9k")
    with pytest.raises(MinisirError, match="does not exist"):
        E.load_benchmark(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValidationError):
        E.EvalConfig(k=0)
    with pytest.raises(ValidationError):
        E.EvalConfig(temprature=0.5)
    cfg = E.EvalConfig()
    assert (cfg.temperature, cfg.top_p) == (0.6, 0.95)


# ------------------------------------------------------------------ metrics
def test_score_question_pass_at_1_and_majority():
    s = E.score_question(["5", "5.0", "6", None], "5")
    assert s["pass@1"] == 0.5 and s["maj@k"] == 1.0 and s["correct"] == [True, True, False, False]
    s = E.score_question(["6", "6", "5", None], "5")
    assert s["pass@1"] == 0.25 and s["maj@k"] == 0.0
    assert E.score_question(["6", "5"], "5")["maj@k"] == 0.0  # tie -> earliest class
    assert E.score_question([None, None], "5") == {"correct": [False, False], "pass@1": 0.0,
                                                  "maj_answer": None, "maj@k": 0.0}


def _records(pass1, maj, ids=None):
    ids = ids or [f"q{i}" for i in range(len(pass1))]
    return [{"id": i, "pass@1": p, "maj@k": m} for i, p, m in zip(ids, pass1, maj)]


def test_aggregate_hand_computed_interval():
    m = E.aggregate(_records([1, 0, 0.5, 0.5], [1, 0, 1, 0]))
    # mean 0.5, sd (ddof 1) = sqrt(0.5 / 3) = 0.408248, half width = 1.959964 * 0.408248 / 2 = 0.400077
    assert m["pass@1"] == pytest.approx(0.5)
    assert m["pass@1_ci"] == pytest.approx([0.099923, 0.900077], abs=1e-5)
    # maj: mean 0.5, sd = sqrt(1/3) = 0.57735, half = 0.565793 -> clipped to [0, 1]
    assert m["maj@k_ci"] == pytest.approx([0.0, 1.0])
    assert "greedy" not in m and m["n_questions"] == 4
    one = E.aggregate(_records([1.0], [1.0]))
    assert one["pass@1"] == 1.0 and all(math.isnan(x) for x in one["pass@1_ci"])


def test_compare_is_paired_over_question_ids():
    a = E.EvalResult({"benchmark": "b"}, {}, _records([1, 0, 0.5, 0.5], [1, 0, 1, 1]))
    b_rows = _records([0, 0, 0.5, 0, 1], [0, 0, 1, 0, 1], ids=["q0", "q1", "q2", "q3", "extra"])
    b = {"questions": b_rows, "config": {"benchmark": "b"}}
    d = E.compare(a, b)
    # diffs [1, 0, 0, 0.5]: mean 0.375, sd = sqrt(0.6875 / 3) = 0.478714, half = 0.469131
    assert d["pass@1"]["n"] == 4
    assert d["pass@1"]["diff"] == pytest.approx(0.375)
    assert d["pass@1"]["ci"] == pytest.approx([-0.094131, 0.844131], abs=1e-5)
    assert d["pass@1"]["significant"] is False
    assert d["pass@1"]["a"] == pytest.approx(0.5) and d["pass@1"]["b"] == pytest.approx(0.125)
    # two non-zero diffs (1, 0.5), both positive: sign p = 2 * (1/2)**2; of the 4 sign patterns
    # only ++ and -- reach |sum| 1.5, so p_perm = 2/4; the tie-free zeros are dropped
    assert d["pass@1"]["p_sign"] == pytest.approx(0.5) and d["pass@1"]["p_perm"] == pytest.approx(0.5)
    assert (d["pass@1"]["wins"], d["pass@1"]["losses"], d["pass@1"]["ties"]) == (2, 0, 2)
    assert d["pass@1"]["perm_method"] == "exact"
    same = E.compare(a, a)["maj@k"]
    assert same["diff"] == 0 and same["ci"] == [0, 0]
    assert same["p_sign"] == 1.0 and same["p_perm"] == 1.0 and same["significant"] is False
    with pytest.raises(MinisirError, match="share no question"):
        E.compare(a, {"questions": _records([1], [1], ids=["other"])})
    table = E.format_compare(d, "step 5", "base")
    assert "pass@1" in table and "p perm" in table and "p sign" in table and "| 0.500 | 0.500 | 2/0/2 | 4 |" in table


# ------------------------------------------------------------------ paired tests
def test_sign_test_hand_computed():
    assert E.sign_test([1.0] * 8) == {"p": 2 / 256, "wins": 8, "losses": 0, "ties": 0}
    assert E.sign_test([-0.25] * 8)["p"] == pytest.approx(2 / 256)
    # ties dropped: 3 wins, 1 loss of n=4 -> 2 * (C(4,0) + C(4,1)) / 16 = 10/16
    r = E.sign_test([1, 1, 1, 0, 0, -1])
    assert r == {"p": pytest.approx(0.625), "wins": 3, "losses": 1, "ties": 2}
    assert E.sign_test([1, -1])["p"] == 1.0  # 2 * P(X <= 1 | n=2) = 1.5, capped
    assert E.sign_test([0.0, 0.0, 0.0]) == {"p": 1.0, "wins": 0, "losses": 0, "ties": 3}
    assert E.sign_test([]) ["p"] == 1.0
    # 10 wins 2 losses: 2 * (1 + 12 + 66) / 4096
    assert E.sign_test([1] * 10 + [-1] * 2)["p"] == pytest.approx(2 * 79 / 4096)


def test_exact_binomial_fallback_matches_hand_values_and_scipy():
    assert E._binom_two_sided_exact(0, 8) == 2 / 256
    assert E._binom_two_sided_exact(8, 8) == 2 / 256
    assert E._binom_two_sided_exact(3, 4) == 10 / 16
    assert E._binom_two_sided_exact(2, 4) == 1.0
    assert E._binom_two_sided_exact(0, 0) == 1.0
    binomtest = pytest.importorskip("scipy.stats").binomtest
    for n in range(1, 30):
        for k in range(n + 1):
            assert E._binom_two_sided_exact(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_permutation_test_exact_hand_computed():
    r = E.permutation_test([1.0] * 8)  # only all-plus and all-minus reach |sum| = 8
    assert r == {"p": 2 / 256, "method": "exact", "nonzero": 8}
    # |d| = 1, .5, .25, .25, observed sum 1.5. Sums with s1 = s2 = +: 1.5 + {.5, 0, 0, -.5}
    # -> 3 of 4 reach 1.5; s1 != s2 gives at most 1; mirrored for s1 = s2 = -: 6/16
    assert E.permutation_test([1, 0.5, 0.25, -0.25])["p"] == pytest.approx(6 / 16)
    # zeros are dropped: they change no sum
    assert E.permutation_test([1, 0.5, 0, 0.25, 0, -0.25])["p"] == pytest.approx(6 / 16)
    assert E.permutation_test([0.0, 0.0]) == {"p": 1.0, "method": "exact", "nonzero": 0}
    assert E.permutation_test([])["p"] == 1.0
    assert E.permutation_test([0.3, -0.3])["p"] == 1.0  # observed sum 0: every pattern is as extreme
    # 3 wins of 1/3 each (floats): |sum| = 1 only for +++ and ---: 2/8 despite float rounding
    assert E.permutation_test([1 / 3, 1 / 3, 1 / 3])["p"] == pytest.approx(0.25)


def test_permutation_test_monte_carlo_beyond_twenty():
    rng = random.Random(11)
    diffs = [rng.choice([1.0, 0.5, 0.25, -0.25, -0.5, 0.75]) for _ in range(21)]
    mc = E.permutation_test(diffs, seed=3)
    assert mc["method"].startswith("monte-carlo (20000 flips") and mc["nonzero"] == 21
    assert mc == E.permutation_test(diffs, seed=3)  # seeded: same p every time
    exact = E.permutation_test(diffs, exact_max=21)  # 2**21 patterns, still quick
    assert exact["method"] == "exact"
    assert abs(mc["p"] - exact["p"]) < 0.02  # Monte Carlo sd here is about 0.003
    # all 25 positive: exact p would be 2 / 2**25; Monte Carlo never reports 0
    strong = E.permutation_test([1.0] * 25)
    assert 0 < strong["p"] <= 1 / 20001 * 5


def test_compare_significance_is_the_permutation_test():
    ids = [f"q{i}" for i in range(8)]
    a = {"questions": _records([1.0] * 8, [1.0] * 8, ids)}
    b = {"questions": _records([0.0] * 8, [0.0] * 7 + [1.0], ids)}
    d = E.compare(a, b)
    assert d["pass@1"]["p_sign"] == 2 / 256 and d["pass@1"]["p_perm"] == 2 / 256
    assert d["pass@1"]["significant"] is True
    # maj@k: 7 wins, 1 tie -> p = 2 / 128 for both tests
    assert d["maj@k"]["p_sign"] == pytest.approx(2 / 128) and d["maj@k"]["ties"] == 1
    assert d["maj@k"]["significant"] is True
    # four wins out of four: the interval excludes 0 but no exact test can reach 0.05 (2/16)
    few = E.compare({"questions": _records([1.0] * 4, [1.0] * 4)}, {"questions": _records([0.0] * 4, [0.0] * 4)})
    assert few["pass@1"]["ci"][0] > 0 and few["pass@1"]["p_perm"] == 0.125
    assert few["pass@1"]["significant"] is False


# ------------------------------------------------------------------ prompts (no model)
class _Completion:
    def __init__(self, text: str):
        self.text, self.token_ids, self.finish_reason = text, [1, 2, 3], "stop"


class FakeSampler:
    """Records what evaluate() asks for and answers every question with a fixed text."""

    n_parallel = 4

    def __init__(self, answer_text: str = "so \\boxed{4}"):
        self.calls: list[dict] = []
        self.answer_text = answer_text

    def generate(self, prompts, n=1, **kwargs):
        self.calls.append({"prompts": list(prompts), "n": n, **kwargs})
        return [[_Completion(self.answer_text) for _ in range(n)] for _ in prompts]


def _two_questions():
    return [E.Question("a", "What is 2 + 2?", "4"), E.Question("b", "What is 3 + 3?", "6")]


def test_evaluate_default_prompt_is_the_shared_math_solver_prompt():
    from minisir.methods.common import MATH_SOLVER_STOP as STUDENT_STOP, math_solver_prompt as student_prompt

    cfg = E.EvalConfig(benchmark="x", k=2)
    fake = FakeSampler()
    res = E.evaluate(fake, _two_questions(), cfg, progress=False)
    assert fake.calls[0]["prompts"] == [student_prompt("What is 2 + 2?"), student_prompt("What is 3 + 3?")]
    assert all(c["stop"] == list(STUDENT_STOP) for c in fake.calls)  # completion style: few-shot stops
    assert [r["pass@1"] for r in res.records] == [1.0, 0.0]
    assert res.config["prompt_style"] == "completion" and res.config["prompt"].endswith("math_solver_prompt")

    chat = lambda messages: "<chat>" + messages[-1]["content"]  # noqa: E731
    fake = FakeSampler()
    res = E.evaluate(fake, _two_questions(), cfg, chat=chat, progress=False)
    assert fake.calls[0]["prompts"][0] == student_prompt("What is 2 + 2?", chat)
    assert fake.calls[0]["prompts"][0].startswith("<chat>What is 2 + 2?")
    assert all(c["stop"] == [] for c in fake.calls)  # the chat template ends the turn itself
    assert res.config["prompt_style"] == "chat"


def test_evaluate_custom_prompt_and_stop():
    seen = []

    def solver(question: str, chat) -> str:
        seen.append(chat)
        return f"Q: {question}\nA:"

    fake = FakeSampler()
    cfg = E.EvalConfig(benchmark="x", k=3, greedy=False)
    res = E.evaluate(fake, _two_questions(), cfg, progress=False, prompt=solver, stop=["\nQ:"])
    assert fake.calls[0]["prompts"] == ["Q: What is 2 + 2?\nA:", "Q: What is 3 + 3?\nA:"]
    assert fake.calls[0]["stop"] == ["\nQ:"] and fake.calls[0]["n"] == 3 and len(fake.calls) == 1
    assert seen == [None, None] and res.config["prompt"].endswith("solver") and res.config["stop"] == ["\nQ:"]
    fake = FakeSampler()
    E.evaluate(fake, _two_questions(), cfg, progress=False, prompt=solver)
    assert fake.calls[0]["stop"] == []  # a custom prompt brings its own stops; none given = none


def test_run_eval_passes_prompt_and_stores_style(tmp_path):
    class Adapters(FakeSampler):
        def clear_adapter(self):
            pass

    archive = Archive.open(tmp_path)
    cfg = E.EvalConfig(benchmark="arithmetic-easy", n_questions=3, k=1, greedy=False)
    fake = Adapters()
    E.run_eval("model.gguf", cfg, archive=archive, sampler=fake, progress=False,
               prompt=lambda q, chat: f"[{q}]", stop=["]"])
    assert fake.calls[0]["prompts"][0] == "[What is 69 + 37?]" and fake.calls[0]["stop"] == ["]"]
    stored = archive.evals()[0]["metrics"]["config"]
    assert stored["prompt_style"] == "completion" and stored["stop"] == ["]"]
    assert stored["benchmark"] == "arithmetic-easy"
    archive.close()


# ------------------------------------------------------------------ a real eval
def test_eval_bundled_model_tiny(tmp_path):
    """A real eval on the bundled model, scored on texts whose verdict is known by hand: the model
    samples (and its token counts stay), then each question's two samples are replaced by a correct
    answer in another spelling and a wrong one, and the greedy texts by an unboxed, a boxed and a
    cut-off answer. What a 270M model happens to write would make the scores depend on the CPU."""
    import dataclasses

    from minisir.assets import bundled_model_path
    from minisir.sampler import Sampler

    cfg = E.EvalConfig(benchmark="gsm8k-100", n_questions=3, k=2, max_tokens=32, seed=1)
    refs = {q.question: q.answer for q in E.load_benchmark("gsm8k-100", 3, 1)}
    assert len(refs) == 3 and all(re.fullmatch(r"\d+", r) for r in refs.values()), refs
    greedy_texts = [lambda r: f"The total is {r}.", lambda r: f"So it is \\boxed{{{r}}}.",
                    lambda r: f"So it is \\boxed{{{r}"]
    sampled_tokens = []
    archive = Archive.open(tmp_path)
    with Sampler(bundled_model_path(), n_ctx=2048, n_parallel=8) as sampler:
        real = sampler.generate

        def generate(prompts, n=1, temperature=1.0, **kw):
            groups = real(prompts, n=n, temperature=temperature, **kw)
            out = []
            for prompt, group in zip(prompts, groups):
                [(i, ref)] = [(i, r) for i, (q, r) in enumerate(refs.items()) if q in prompt]
                if temperature > 0:
                    sampled_tokens.extend(len(c.token_ids) for c in group)
                    texts = [f"Adding up gives {int(ref):,}.00, so the answer is \\boxed{{{int(ref):,}.00}}.",
                             f"The answer is \\boxed{{{int(ref) + 1}}}."]
                else:
                    texts = [greedy_texts[i](ref)]
                out.append([dataclasses.replace(c, text=t) for c, t in zip(group, texts)])
            return out

        sampler.generate = generate
        res = E.run_eval(bundled_model_path(), cfg, archive=archive, sampler=sampler, progress=False)
    assert [rec["reference"] for rec in res.records] == list(refs.values())
    for i, rec in enumerate(res.records):
        ref = int(rec["reference"])
        assert rec["answers"] == [f"{ref:,}.00", str(ref + 1)]
        assert rec["correct"] == [True, False] and rec["pass@1"] == 0.5
        assert rec["maj@k"] == 1.0  # a 1-1 tie goes to the first answer class, here the right one
        assert rec["greedy"] == [0.0, 1.0, 0.0][i]  # no box / boxed / box never closed
    m = res.metrics
    assert m["pass@1"] == 0.5 and m["maj@k"] == 1.0 and m["greedy"] == pytest.approx(1 / 3)
    assert m["boxed_rate"] == 1.0 and len(m["pass@1_ci"]) == 2
    assert len(sampled_tokens) == 6 and m["mean_tokens"] == pytest.approx(sum(sampled_tokens) / 6)
    assert 0 < m["mean_tokens"] <= 32
    stored = archive.evals()
    assert len(stored) == 1 and stored[0]["benchmark"] == "gsm8k-100" and stored[0]["step"] is None
    metrics = stored[0]["metrics"]
    assert metrics["config"]["seed"] == 1 and metrics["config"]["temperature"] == 0.6
    assert metrics["config"]["adapter"] is None and len(metrics["questions"]) == 3
    assert E.compare(res, metrics)["pass@1"]["diff"] == 0  # stored scores round-trip
    assert "gsm8k-100" in E.format_table({"base": res})
    with pytest.raises(MinisirError, match="no step 3"):
        E.adapter_for_step(archive, 3)
    archive.close()


def test_a_cached_evaluation_is_rescored_by_the_current_check(tmp_path):
    """The cache keeps samples, not verdicts. Every answer here restates its question's sum
    ("\\boxed{69 + 37}"), which equivalence alone accepts: records stored by such a looser check
    (all right) are scored again by answers.matches when reused, and nothing is sampled again."""
    import json
    from types import SimpleNamespace

    from minisir.answers import equivalent

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF model bytes")
    cache = tmp_path / "cache"
    cfg = E.EvalConfig(benchmark="arithmetic-easy", n_questions=40, k=2)
    bare = {q.question: re.fullmatch(r"What is (.+)\?", q.question) for q in E.load_benchmark("arithmetic-easy", 40, 0)}
    bare = {q: m.group(1) for q, m in bare.items() if m}
    assert len(bare) >= 5

    calls = []

    def generate(prompts, n=1, **kwargs):
        calls.append(len(prompts))
        out = []
        for prompt in prompts:
            question = max(bare, key=lambda q: prompt.rfind(q))  # the one being asked: the last in the prompt
            text = f"So \\boxed{{{bare[question]}}}." if prompt.rfind(question) >= 0 else "So \\boxed{-1}."
            out.append([_Completion(text) for _ in range(n)])
        return out

    fake = SimpleNamespace(n_parallel=4, generate=generate, set_adapter=lambda *a, **k: None,
                           clear_adapter=lambda: None)
    first = E.run_eval(model, cfg, sampler=fake, progress=False, cache_dir=cache)
    restated = [r for r in first.records if r["question"] in bare]
    assert len(restated) >= 5 and all(equivalent(r["answers"][0], r["reference"]) for r in restated)
    assert first.metrics["pass@1"] == first.metrics["maj@k"] == first.metrics["greedy"] == 0.0
    [path] = cache.glob("*.json")
    data = json.loads(path.read_text())
    for rec in data["records"]:  # what a looser check would have stored
        rec.update({"correct": [True, True], "pass@1": 1.0, "maj@k": 1.0, "greedy": 1.0})
    data["metrics"].update({"pass@1": 1.0, "maj@k": 1.0, "greedy": 1.0})
    path.write_text(json.dumps(data))
    n_calls = len(calls)
    again = E.run_eval(model, cfg, sampler=fake, progress=False, cache_dir=cache)
    assert len(calls) == n_calls and again.metrics["cached"]
    assert all(r["correct"] == [False, False] and r["greedy"] == 0.0 for r in again.records)
    assert again.metrics["pass@1"] == again.metrics["maj@k"] == again.metrics["greedy"] == 0.0
    assert [r["answers"] for r in again.records] == [r["answers"] for r in first.records]


def test_identical_evaluations_are_reused_and_different_ones_are_not(tmp_path):
    """run_eval(cache_dir=...) samples an identical evaluation once (two runs compared with
    one base model); a change of model bytes, adapter, settings or prompt samples again."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF model bytes")
    cache = tmp_path / "cache"
    cfg = E.EvalConfig(benchmark="arithmetic-easy", n_questions=3, k=2, greedy=False)
    fake = FakeSampler()
    fake.set_adapter = fake.clear_adapter = lambda *a, **k: None
    first = E.run_eval(model, cfg, sampler=fake, progress=False, cache_dir=cache)
    again = E.run_eval(model, cfg, sampler=fake, progress=False, cache_dir=cache)
    assert len(fake.calls) == 1 and again.metrics["cached"] and again.records == first.records
    E.run_eval(model, cfg.model_copy(update={"k": 3}), sampler=fake, progress=False, cache_dir=cache)
    E.run_eval(model, cfg, sampler=fake, progress=False, cache_dir=cache, prompt=lambda q, chat: f"Q: {q}\nA:")
    model.write_bytes(b"GGUF other model bytes")
    E.run_eval(model, cfg, sampler=fake, progress=False, cache_dir=cache)
    assert len(fake.calls) == 4
    E.run_eval(model, cfg, sampler=fake, progress=False)  # no cache_dir: always samples
    assert len(fake.calls) == 5
