"""Executed labels: bare expressions, proposer programs (exact or sandboxed), refusals and the audit."""

from __future__ import annotations

import pytest

from minisir.answers import matches
from minisir.labels import (audit, bare_expression, exact_value, execute, foreign_numbers, printed_number,
                            reused_numbers, unused_numbers)
from minisir.sandbox import SandboxConfig


@pytest.mark.parametrize("problem, expr", [
    ("What is 47 + 38?", "47 + 38"),
    ("Compute 736 - 148 * 3.", "736 - 148 * 3"),
    ("what's 12 x 4?", "12 * 4"),
    ("Calculate (3 + 4) × 2", "(3 + 4) * 2"),
    ("84 ÷ 7 = ?", "84 / 7"),
    ("Tom has 35 marbles and gives 12 away. How many are left?", None),
    ("What is 47?", None),  # no operator: nothing to compute
    ("What is x + 3?", None),
])
def test_bare_expression(problem, expr):
    assert bare_expression(problem) == expr


@pytest.mark.parametrize("expr, value", [
    ("27 * 8", "216"), ("736 - 148 * 3", "292"), ("7 / 2", "3.5"), ("1 / 3", "1/3"),
    ("(3 + 4) * 2", "14"), ("5 / 0", None), ("2 ** 2000", None),
])
def test_exact_value(expr, value):
    assert exact_value(expr) == value


def test_execute_uses_the_problem_or_the_program():
    problems = ["What is 27 * 8?", "Tom has 35 marbles and gives 12 away. How many are left?",
                "Tom has 35 marbles and gives 12 away. How many are left?", "A word problem with no program."]
    programs = [None, "print(35 - 12)", "left = 35 - 12\nprint(f'{left}')", None]
    out = execute(problems, programs)
    assert [(e.answer, e.source) for e in out] == [("216", "expression"), ("23", "program"), ("23", "program"),
                                                    (None, None)]
    assert "not a bare expression" in out[3].reason


def test_a_program_must_give_its_bare_expressions_value():
    problem = "What is 5 + (2 + 3)?"  # a proposer's program on the bundled model: print(5 + 2 * (2 + 3))
    out = execute([problem, problem, problem, problem, "What is 2 * (4 + (4 * 2)?"],
                  ["print(5 + 2 * (2 + 3))", "a = 5 + 2 * 3\nprint(a)", "a = 5 + (2 + 3)\nprint('The answer is', a)",
                   "print(5 + 2 + 3)", "print(2 * (4 + 4 * 2))"])
    assert out[0].answer is None and out[0].reason == "program gives 15, but the problem's 5 + (2 + 3) is 10"
    assert out[1].answer is None and out[1].reason.startswith("program gives 11")  # sandboxed, the same check
    assert [(e.answer, e.source) for e in out[2:4]] == [("10", "program"), ("10", "program")]
    assert out[4].answer is None and out[4].reason == "the problem's expression 2 * (4 + (4 * 2) does not evaluate"
    (alone,) = execute(["What is 2 * (4 + (4 * 2)?"], [None])
    assert alone.reason == out[4].reason


def test_a_users_verifier_mode_checks_no_expression():
    (e,) = execute(["What is 2 + 2?"], ['print(2 + 2 + 1, "apples")'], whole_output=True)
    assert (e.answer, e.source) == ("5 apples", "program")


def test_failing_programs_are_refused_with_their_reason():
    cfg = SandboxConfig(timeout_s=1.0)
    out = execute(["p"] * 4, ["print(1 / 0)", "while True:\n    pass", "print('no digits')", "import os\nx = 1"],
                  cfg)
    assert all(e.answer is None for e in out)
    assert "ZeroDivisionError" in out[0].reason
    assert "timeout" in out[1].reason
    assert out[2].reason == "program printed no number"
    assert out[3].reason == "program printed no number"


@pytest.mark.parametrize("problem, program, unused", [
    ("What is the remainder when 5 * 4 is divided by 3 ?", "print(5 * 4)", ["3"]),
    ("What is -11 * -3?", "print(9 * - 11)", ["3"]),
    ("Tom has 35 marbles and gives 12 away. How many are left?", "left = 35 - 12\nprint(left)", []),
    ("A shop sells 1,200 pens and 15% are blue. How many are blue?", "print(1200 * 0.15)", []),
    ("What is 1/2 + 1/3?", "print(0.5 + 1/3)", []),
    ("What is 2.5 * 4?", "print(2.5 * 4)", []),
    ("Ann has 3 pens, 3 pencils and 7 books. How many pens and pencils?", "print(3 + 3)", ["7"]),
    ("What is 6 * 7?", "print(6 *", []),  # does not parse: running it says so
])
def test_unused_numbers_are_the_problems_numbers_the_program_never_writes(problem, program, unused):
    assert unused_numbers(problem, program) == unused


def test_a_program_that_ignores_a_number_of_its_problem_gives_no_label():
    out = execute(["What is the remainder when 5 * 4 is divided by 3 ?", "What is the remainder when 5 * 4 is divided by 3 ?"],
                  ["print(5 * 4)", "print(5 * 4 % 3)"])
    assert (out[0].answer, out[0].reason) == (None, "program leaves 3 of the problem unused")
    assert out[1].answer == "2"


def test_audit_compares_by_value():
    assert audit("216", "216.0") is True
    assert audit("164", "216") is False
    assert audit(None, "216") is None and audit("216", None) is None


@pytest.mark.parametrize("stdout, answer", [
    ("0.30000000000000004\n", "0.3"),  # x = 0.1 * 3; print(x)
    ("110.00000000000001\n", "110"),  # a = 100 * 1.1; print(a)
    ("The answer is 42\n", "42"),  # print('The answer is', n)
    ("0.3333333333333333\n", "1/3"),
    ("3.14159\n", "3.14159"),  # not within 1e-9 of a small fraction: kept exact
    ("-12\n", "-12"),
    ("1e3\n", "1000"),
    ("total: 1,250 dollars\n", "1250"),
    ("3 apples and 4 pears: 7\n", "7"),  # several numbers: the last
    ("step 1\nstep 2\nresult 2.5\n", "2.5"),
])
def test_a_program_label_is_the_last_number_it_printed_read_exactly(stdout, answer):
    """Issue 28: the last printed line was the label, so 0.1 * 3 gave 0.30000000000000004 and
    print('The answer is', 42) gave 'Theansweris42'; a student answering 0.3 or 42 earned 0."""
    assert printed_number(stdout) == (answer, None)


@pytest.mark.parametrize("stdout, why", [("no digits here\n", "program printed no number"),
                                         ("", "program printed no number"),
                                         ("1e99999999\n", "too large to check")])
def test_output_with_no_number_is_refused_with_the_reason(stdout, why):
    value, reason = printed_number(stdout)
    assert value is None and why in reason


def test_executed_float_and_text_programs_match_the_right_answer():
    out = execute(["What is 0.1 * 3?", "What is 100 * 1.1?", "What is 6 * 7?"], ["x = 0.1 * 3\nprint(x)", "a = 100 * 1.1\nprint(a)",
                              "n = 6 * 7\nprint('The answer is', n)"])
    assert [e.answer for e in out] == ["0.3", "110", "42"]
    assert all(matches(student, e.answer) for student, e in zip(["0.3", "110", "42"], out))


def test_judge_gives_each_solution_a_verdict_the_vote_and_its_audit():
    """The one verdict every method takes: answers read from the last box, matched by value
    ("216.0" is 216; "27 * 8" restates the question and is not), unparsed ones wrong."""
    from minisir.labels import judge

    texts = ["27 * 8 = 216. \\boxed{216}", "\\boxed{216.0}", "\\boxed{27 * 8}", "no box", "\\boxed{217}"]
    v = judge(texts, "216")
    assert v.answers == ["216", "216.0", "27 * 8", None, "217"]
    assert v.correct == [True, True, False, False, False]
    assert v.right == 2 and v.solve_rate == 0.4
    assert v.vote.count == 2 and v.audit is True
    wrong = judge(["\\boxed{5}", "\\boxed{5}", "\\boxed{6}"], "6")
    assert wrong.correct == [False, False, True] and wrong.audit is False  # the vote (5) is not the label
    none = judge(["\\boxed{5}"], None)
    assert none.correct == [False] and none.audit is None and none.solve_rate == 0.0
    assert judge([], "3").solve_rate == 0.0


def test_a_users_verifier_judges_answers_that_are_not_numbers():
    """method.verifier on a toy topic (formulas): the program's whole output is the label, and the
    user's function, not the numeric match, gives each verdict."""
    from minisir.labels import bind_verifier, execute, judge

    problem = "What is the chemical formula of water?"
    (ex,) = execute([problem], ['print("H2O")'], whole_output=True)
    assert ex.answer == "H2O"
    (number,) = execute([problem], ['print("H2O")'])  # without a verifier: a number is needed
    assert number.answer is None and number.reason == "program printed no number"
    check = bind_verifier("toy_verifier:same_formula", problem, ex.answer)
    v = judge(["\\boxed{OH2}", "\\boxed{H2O2}", "\\boxed{H2O}", "nothing"], ex.answer, check)
    assert v.correct == [True, False, True, False] and v.solve_rate == 0.5
    (empty,) = execute([problem], ['print("   ")'], whole_output=True)
    assert empty.answer is None and empty.reason == "program printed nothing"


def test_a_verifier_that_cannot_load_or_raises_fails_in_one_line():
    from minisir.errors import MinisirError, RecipeError
    from minisir.labels import bind_verifier, load_verifier

    with pytest.raises(RecipeError, match=r"^method.verifier: cannot load toy_verifier:nope \(AttributeError"):
        load_verifier("toy_verifier:nope")
    with pytest.raises(RecipeError, match=r"^method.verifier: cannot load no_such_pkg.mod:f \(ModuleNotFoundError"):
        load_verifier("no_such_pkg.mod:f")
    check = bind_verifier("toy_verifier:broken", "What is water?", "H2O")
    with pytest.raises(MinisirError, match=r"^method.verifier toy_verifier:broken raised KeyError") as err:
        check("H2O")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("problem, program, foreign", [
    ("How many minutes to a week have intervals of 11 days after?", "print(11 - 6 + 58)", ["6", "58"]),
    ("by the ways he wants, and extra coins, he generated 76 problems", "print(76 + 8)", ["8"]),
    ("Tom has 35 marbles and gives 12 away. How many are left?", "print(35 - 12)", []),
    ("You have five plums. How many more make 9?", "print(9 - 5)", []),  # a number word is stated
    ("A dozen eggs cost 3 dollars. What do 4 dozen cost?", "print(4 * 3)", []),
    ("How many minutes are in 3 hours?", "print(3 * 60)", []),  # implied: minutes in an hour
    ("A shop sells 1,200 pens and 15% are blue. How many are blue?", "print(1200 * 0.15)", []),
    ("What is 1/2 + 1/3?", "print(0.5 + 1/3)", []),
    ("What is 6 * 7?", "print(6 *", []),  # does not parse: running it says so
])
def test_foreign_numbers_are_the_programs_constants_the_problem_never_states(problem, program, foreign):
    assert foreign_numbers(problem, program) == foreign


def test_a_program_computing_with_numbers_its_problem_never_states_gives_no_label():
    (out,) = execute(["How many minutes to a week have intervals of 11 days after?"], ["print(11 - 6 + 58)"])
    assert (out.answer, out.reason) == (None, "program uses 6, 58, which the problem never states")
    (kept,) = execute(["How far does a stone fall in 2 seconds?"], ["print(0.5 * 9.8 * 2 ** 2)"], stated_only=False)
    assert kept.answer == "19.6"  # method.stated_numbers_only: false, for topics with constants of their own


@pytest.mark.parametrize("problem, program, reused", [
    # admitted with these labels in the ninth sitting's runs (RESULTS.md): a stated number squared or doubled
    ("How many toys did 12 kids buy?", "print(12 * 12)", ["12"]),
    ("Karl has 29 yellow apples. How many yellow apples does he have now?", "print(29 + 29)", ["29"]),
    ("When you have a correct answer of 872 + 88 + 8 on the number line?", "print(872 + 88 + 8 + 8)", ["8"]),
    ("Matt sold 25 eggs and put one together at the end. How many eggs?", "print(25 * 1 + 1)", ["1"]),
    # stated as often as written, or a power asked for, or a number only implied
    ("Sam puts 6 toys in each of 6 boxes. How many toys?", "print(6 * 6)", []),
    ("You have five plums and buy 5 more. How many plums?", "print(5 + 5)", []),
    ("A square garden has sides of 7 m. What is its area?", "print(7 * 7)", []),
    ("What is 9 squared?", "print(9 ** 2)", []),
    ("What is 3^2?", "print(3 ** 2)", []),
    ("How many seconds are in 5 hours?", "print(5 * 60 * 60)", []),
    ("Tom has 35 marbles and gives 12 away. How many are left?", "print(35 - 12)", []),
    ("What is 6 * 7?", "print(6 *", []),  # does not parse: running it says so
])
def test_reused_numbers_are_stated_numbers_the_program_writes_more_often(problem, program, reused):
    assert reused_numbers(problem, program) == reused


def test_a_program_that_squares_its_problems_only_number_gives_no_label():
    problems = ["How many toys did 12 kids buy?", "Sam puts 6 toys in each of 6 boxes. How many toys?"]
    out = execute(problems, ["print(12 * 12)", "print(6 * 6)"])
    assert (out[0].answer, out[0].reason) == (None, "program uses 12 more often than the problem states it")
    assert (out[1].answer, out[1].source) == ("36", "program")
    (kept,) = execute(problems[:1], ["print(12 * 12)"], stated_only=False)
    assert kept.answer == "144"  # method.stated_numbers_only: false turns the check off with the other
