"""Labels an executor verifies: a problem's exact answer from its own text or its program.

Neither reference checks a math label: both trust the majority vote. On a weak model the
vote is mostly wrong (17% right on the bundled 270M's own bare expressions), so the
teacher/proposer also writes a short program that computes the answer from the
problem's numbers, and minisir runs it:
- a problem that is a bare expression ("What is 27 * 8?") is its own program, and a program
  written beside it must give the same value, or the problem has no label (own_value_check);
- a program that is one expression, or `print(expression)`, is evaluated exactly with
  the AST-whitelist evaluator (evaluate.SafeEval, Fractions; never Python's eval);
- anything else runs in the sandbox (minisir.sandbox); the last number it prints is the answer
  (printed_number: "The answer is 42" gives 42, a float such as 0.30000000000000004 that lies
  within 1e-9 of a fraction with a small denominator gives that fraction, 3/10).
A program that fails, times out or prints no number gives no label, with the reason. So does a
program that leaves a number of its problem unused (unused_numbers): "What is the remainder when
5 * 4 is divided by 3?" with `print(5 * 4)` labels a sum the words do not ask for; and so does one
that computes with a number its problem never states (foreign_numbers), or with a stated one more
often than the problem states it, unless it asks for a power (reused_numbers): "How many toys did
12 kids buy?" with `print(12 * 12)`.

`method.labels` then decides what the label is (LabelMode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from .prompting import one_line

if TYPE_CHECKING:
    from .answers import Vote

LabelMode = Literal["majority", "program", "agree"]
LABEL_MODES: tuple[str, ...] = ("majority", "program", "agree")
LABELS_DESCRIPTION = (
    "majority: the majority vote is the label (the references); program: the proposer's executed program "
    "(or the problem's own bare expression) is the label, and every reward, solve rate and band uses true "
    "correctness; agree: a problem counts only when the majority and the executed answer agree")

_OPS = r"[-+*/]"
_EXPR_CHARS = re.compile(r"^[\d\s+\-*/().]+$")
_BARE = re.compile(r"^(?:what\s+is|what's|compute|calculate|evaluate|find|solve)?\s*:?\s*(?P<expr>.+?)\s*"
                   r"(?:=\s*)?(?:\?|\.)?\s*$", re.I | re.S)
_PRINT = re.compile(r"^print\s*\((?P<expr>.*)\)\s*;?\s*$", re.S)


MAX_PROGRAM_CHARS = 2000  # a label program longer than this is refused: no arithmetic problem needs it


def checked_program(code: str) -> tuple[str | None, str | None]:
    """(a written label program without its surrounding blank lines, or None and why): the one size
    rule for every method's program parser (SQLM's <program>, OpenSIR's tags and ```python block)."""
    code = code.strip("\n")
    if not code.strip():
        return None, "empty program"
    if len(code) > MAX_PROGRAM_CHARS:
        return None, f"program longer than {MAX_PROGRAM_CHARS} characters"
    return code, None


@dataclass
class Executed:
    """What running a problem's label program gave."""

    answer: str | None  # the exact value as text; None when there is no label
    source: str | None = None  # "expression" (the problem's own) | "program" (the proposer's)
    reason: str | None = None  # why no label


def _as_expression(text: str) -> str | None:
    """The arithmetic expression text stands for, or None (needs at least one operator)."""
    t = text.replace("×", "*").replace("÷", "/").replace("−", "-")
    t = re.sub(r"(?<=\d)\s*[xX]\s*(?=\d)", " * ", t)
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    if not _EXPR_CHARS.match(t) or not re.search(r"\d\s*" + _OPS + r"\s*[\d(]", t):
        return None
    return t.strip()


def bare_expression(problem: str) -> str | None:
    """The expression of a problem that is nothing but arithmetic ("What is 47 + 38?")."""
    m = _BARE.match(one_line(problem))
    return _as_expression(m.group("expr")) if m else None


def exact_value(expr: str) -> str | None:
    """The exact value of a numeric expression (Fractions), None when it cannot be evaluated."""
    from .evaluate import SafeEval, TemplateError, format_number

    try:
        return format_number(SafeEval({}, {})(expr))
    except (TemplateError, ZeroDivisionError, RecursionError, ValueError, TypeError):
        return None


def _program_expression(program: str) -> str | None:
    """The expression of a one-line program: `EXPR` or `print(EXPR)` with numbers only."""
    lines = [ln for ln in program.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        return None
    line = lines[0].strip()
    m = _PRINT.match(line)
    return _as_expression(m.group("expr") if m else line)


# A number as a program prints it: thousands separators, a sign, decimals, an exponent.
_PRINTED = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|(?<![\w.])[-+]?\.\d+")
SMALL_DENOMINATOR = 1000  # floats this close to p/q (q <= this) are read as p/q
FLOAT_TOLERANCE = 1e-9  # relative


def printed_number(stdout: str) -> tuple[str | None, str | None]:
    """(the last number a program printed, read exactly; or None and why not).

    Python's floats print 0.1 * 3 as 0.30000000000000004: a value within FLOAT_TOLERANCE of a
    fraction whose denominator is at most SMALL_DENOMINATOR is read as that fraction. Text around
    the number ("The answer is 42") is ignored; of several numbers the last one counts.
    """
    from fractions import Fraction

    from .answers import _huge_exponent
    from .evaluate import format_number

    found = _PRINTED.findall(stdout[-10_000:])
    if not found:
        return None, "program printed no number"
    text = found[-1].replace(",", "")
    if _huge_exponent(text):
        return None, f"program printed a number too large to check ({text[:40]})"
    value = Fraction(text)
    if "." in text or "e" in text.lower():
        near = value.limit_denominator(SMALL_DENOMINATOR)
        if abs(near - value) <= FLOAT_TOLERANCE * max(1, abs(value)):
            value = near
    return format_number(value), None


_TEXT_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_TEXT_FRACTION = re.compile(r"(?<![\w.])(\d+)\s*/\s*(\d+)(?![\d.])")


def program_constants(program: str) -> set | None:
    """The numeric constants a program writes, as absolute Fractions; None when it does not parse."""
    written = _written_constants(program)
    return None if written is None else set(written)


def _written_constants(program: str) -> list | None:
    """Every numeric constant a program writes, as an absolute Fraction, once per time it is written."""
    import ast
    from fractions import Fraction

    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return None
    return [abs(Fraction(repr(node.value))) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and type(node.value) in (int, float)
            and node.value == node.value and abs(node.value) != float("inf")]


def _text_numbers(problem: str) -> list[tuple[str, set]]:
    """Each number the text writes, with the values a program may hold it as: itself, as a
    percentage (15 as 0.15), and the value of a fraction it is part of (1 and 2 of 1/2 as 0.5)."""
    from fractions import Fraction

    fractions = {}
    for m in _TEXT_FRACTION.finditer(problem):
        if int(m.group(2)):
            fractions[m.start(1)] = fractions[m.start(2)] = Fraction(int(m.group(1)), int(m.group(2)))
    out = []
    for m in _TEXT_NUMBER.finditer(problem):
        value = Fraction(m.group().replace(",", ""))
        out.append((m.group(), {value, value / 100} | ({fractions[m.start()]} if m.start() in fractions else set())))
    return out


def unused_numbers(problem: str, program: str) -> list[str]:
    """The numbers of a problem's text that its program never writes.

    A number counts as used when the program holds it as a constant, as a percentage (15% as
    0.15), or as the value of a fraction the text writes (1/2 as 0.5). Numbers spelt in words
    are not read. An empty list when the program does not parse: running it reports that.
    """
    literals = program_constants(program)
    if literals is None:
        return []
    unused: list[str] = []
    for text, values in _text_numbers(problem):
        if not values & literals and text not in unused:
            unused.append(text)
    return unused


MAX_OUTPUT_LABEL = 1000  # characters of a program's output kept as a verifier's label


def output_label(stdout: str) -> tuple[str | None, str | None]:
    """(a program's whole output as the label, or None and why): what a method.verifier compares
    answers with, when they need not be numbers."""
    text = stdout.strip()
    if not text:
        return None, "program printed nothing"
    if len(text) > MAX_OUTPUT_LABEL:
        return None, f"program printed {len(text)} characters (a label holds at most {MAX_OUTPUT_LABEL})"
    return text, None


# Numbers a problem can imply without writing them: halves and doubles, a dozen, days in a week,
# hours in a day, minutes in an hour, percent, a thousand, days in a year.
IMPLIED_NUMBERS = (0, 1, 2, 3, 4, 7, 10, 12, 24, 30, 52, 60, 100, 365, 1000)
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                      "ninety": 90, "hundred": 100, "dozen": 12, "half": 2, "twice": 2, "double": 2,
                      "triple": 3, "quarter": 4})


def _word_numbers(problem: str) -> list:
    """The values of the number words a text writes ("five", "dozen", "twice"), once per word, as Fractions."""
    from fractions import Fraction

    return [Fraction(_NUMBER_WORDS[w]) for w in re.findall(r"[a-z]+", problem.lower()) if w in _NUMBER_WORDS]


def foreign_numbers(problem: str, program: str) -> list[str]:
    """The constants a program writes that its problem never states: a label computed from numbers
    the solvers cannot see. On the bundled model's own problems such programs were solved 10x less
    often (RESULTS.md, third sitting): the problem and its program are about different things.

    Stated: a number of the text (also as a percentage or the value of a fraction it writes), a
    number word ("five", "dozen"), or one of IMPLIED_NUMBERS. Empty when the program does not parse.
    """
    from fractions import Fraction

    from .evaluate import format_number

    literals = program_constants(program)
    if not literals:
        return []
    stated = {Fraction(n) for n in IMPLIED_NUMBERS}.union(*(values for _, values in _text_numbers(problem)))
    stated |= set(_word_numbers(problem))
    return [format_number(v) for v in sorted(literals - stated)]


# Words that make a number's square (or higher power) what the problem asks for.
_POWER_WORDS = re.compile(r"squar|area|itself|power|cube|cubic|\^|\*\*", re.I)


def reused_numbers(problem: str, program: str) -> list[str]:
    """The numbers a program writes more often than its problem states them, when the problem asks
    for no power: "How many toys did 12 kids buy?" labelled by `print(12 * 12)`.

    On the bundled model 30 of one OpenSIR seed's 120 admitted problems were such squares or doubles
    of a stated number (RESULTS.md, tenth sitting), so the label answered no question. A stated number counts
    once per time the text writes it, as a numeral (also as a percentage or a fraction's value) or a
    word; a number only implied (60, 24, 12 ...) may be reused freely, one the text states may not
    ("How many seconds are in 60 minutes?" is refused: a rare cost). Empty when the program does not
    parse or the problem has a power word (square, area, cube, itself, power, ^).
    """
    from collections import Counter

    from .evaluate import format_number

    constants = None if _POWER_WORDS.search(problem) else _written_constants(program)
    if not constants:
        return []
    written = Counter(constants)
    stated: Counter = Counter()
    for _, values in _text_numbers(problem):
        stated.update(values)
    stated.update(_word_numbers(problem))
    return [format_number(v) for v in sorted(written) if 0 < stated[v] < written[v]]


STATED_NUMBERS_DESCRIPTION = (
    "labels program/agree: refuse a label program that computes with a number its problem never states "
    "(number words and IMPLIED_NUMBERS such as 60, 12 or 365 count as stated): on the bundled model such labels "
    "belong to another problem; nor one that writes a stated number more often than the problem does, unless the "
    "problem asks for a power (square, area, cube): such labels squared the problem's only number; turn off for "
    "topics with constants of their own (physics, unit conversions)")


def execute(problems: Sequence[str], programs: Sequence[str | None], sandbox=None,
            whole_output: bool = False, stated_only: bool = True) -> list[Executed]:
    """Labels for many problems at once; programs that need Python share one sandbox pool.

    problems[i] is its own label when it is a bare expression and programs[i] is None; a program
    given beside a bare expression must compute the expression's value (own_value_check), and one
    for a bare expression that does not evaluate is refused. whole_output: the label is all a program
    printed (output_label, for a method.verifier), not its last number, and no expression is checked.
    stated_only: refuse a program that computes with a number its problem never states (foreign_numbers),
    or with a stated one more often than stated (reused_numbers).
    """
    from .sandbox import SandboxConfig, run_batch

    out: list[Executed | None] = [None] * len(problems)
    jobs: list[tuple[int, str]] = []
    exprs = [bare_expression(problem or "") for problem in problems]
    own = [exact_value(e) if e else None for e in exprs]
    for i, (problem, program) in enumerate(zip(problems, programs)):
        unevaluable = f"the problem's expression {(exprs[i] or '')[:60]} does not evaluate"
        if program is None or not program.strip():
            out[i] = Executed(own[i], "expression") if own[i] is not None else Executed(
                None, None, unevaluable if exprs[i] else "no program, and the problem is not a bare expression")
            continue
        if exprs[i] and own[i] is None and not whole_output:
            out[i] = Executed(None, None, unevaluable)
            continue
        unused = unused_numbers(problem or "", program)
        if unused:
            out[i] = Executed(None, None, f"program leaves {', '.join(unused[:3])} of the problem unused")
            continue
        foreign = foreign_numbers(problem or "", program) if stated_only else []
        if foreign:
            out[i] = Executed(None, None, f"program uses {', '.join(foreign[:3])}, which the problem never states")
            continue
        # a bare expression's program is held to the expression's value instead (own_value_check)
        reused = reused_numbers(problem or "", program) if stated_only and not exprs[i] else []
        if reused:
            out[i] = Executed(None, None, f"program uses {', '.join(reused[:3])} more often than the problem states it")
            continue
        expr = _program_expression(program)
        value = exact_value(expr) if expr else None
        if value is not None:
            out[i] = Executed(value, "program")
        else:
            jobs.append((i, program))
    results = run_batch([(code, "") for _, code in jobs], sandbox or SandboxConfig())
    for (i, _), res in zip(jobs, results):
        if res.killed_reason:
            out[i] = Executed(None, None, f"program {res.killed_reason.replace('_', ' ')}")
        elif res.exit_code != 0:
            last = (res.stderr.strip().splitlines() or ["exit code %s" % res.exit_code])[-1]
            out[i] = Executed(None, None, f"program failed: {last[:120]}")
        else:
            value, why = (output_label if whole_output else printed_number)(res.stdout)
            out[i] = Executed(value, "program") if value is not None else Executed(None, None, why)
    if not whole_output:
        out = [own_value_check(e, exprs[i], own[i]) if e is not None else None for i, e in enumerate(out)]
    return [e if e is not None else Executed(None, None, "not executed") for e in out]


def own_value_check(found: Executed, expr: str | None, own: str | None) -> Executed:
    """A program's label for a bare-expression problem is refused unless it is the expression's value.

    The problem's words are what the solvers answer: "What is 5 + (2 + 3)?" with the program
    `print(5 + 2 * (2 + 3))` labelled 15, so every solver who said 10 earned 0. On the bundled
    model's fixed stretch run 14-18% of labelled bare expressions carried such a label from step 30 on.
    """
    if found.source != "program" or found.answer is None or own is None or found.answer == own:
        return found
    return Executed(None, None, f"program gives {found.answer}, but the problem's {expr[:60]} is {own}")


@dataclass
class Verdicts:
    """What the labelling path says of one problem's N solutions (judge)."""

    answers: list[str | None]  # each solution's last \\boxed{} answer
    correct: list[bool]  # each answer against the label (all False without one)
    vote: "Vote"  # the majority vote of the answers (the references' label)
    audit: bool | None  # whether the vote equals the label; None when either is missing

    @property
    def right(self) -> int:
        return sum(self.correct)

    @property
    def solve_rate(self) -> float:
        """Share of all N samples judged right (unparsed ones count as wrong)."""
        return self.right / len(self.correct) if self.correct else 0.0


Check = Callable[[str], bool]
"""One problem's verdict on one answer (a user's method.verifier bound to the problem and its label)."""


def judge(texts: Sequence[str], label: str | None, check: Check | None = None) -> Verdicts:
    """Every method's one verdict on a problem's solutions: each boxed answer against `label`
    (an executed or known answer), the vote, and the vote's audit against the label. SQLM,
    OpenSIR and rlvr all judge through here.

    By value (answers.matches: a number, not the sum restated), or by `check` when the recipe names
    its own verifier (bind_verifier)."""
    from .answers import extract_boxed, majority_vote, matches

    same = check or (lambda a: bool(matches(a, label)))
    answers = [extract_boxed(t) for t in texts]
    correct = [label is not None and a is not None and same(a) for a in answers]
    vote = majority_vote(answers)
    audited = None if vote.answer is None or label is None else bool(same(vote.answer))
    return Verdicts(answers, correct, vote, audited)


VERIFIER_DESCRIPTION = (
    "your own checker for answers that are not numbers (units, a formula, a table): 'package.module:function', "
    "importable where minisir runs, called as function(problem, label, answer) -> bool, where label is what "
    "the proposer's program printed (rlvr: the known answer) and answer a solver's last \\boxed{}; it replaces "
    "the numeric match, and the program's whole output becomes the label; null = numbers, matched by value")
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def verifier_spec(spec: str | None) -> str | None:
    """A recipe's method.verifier, checked for shape only (it is imported when the run starts)."""
    if spec is not None and not _SPEC.match(spec):
        raise ValueError(f"verifier {spec!r} must be 'package.module:function'")
    return spec


@lru_cache(maxsize=8)
def load_verifier(spec: str) -> Callable[[str, str, str], bool]:
    """The function a method.verifier names; a RecipeError naming the field when it cannot be had."""
    import importlib

    from .errors import RecipeError

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as exc:  # ImportError, AttributeError, or the module's own error on import
        raise RecipeError(f"method.verifier: cannot load {spec} ({type(exc).__name__}: {exc}); check that "
                          f"{module} is importable (on PYTHONPATH or installed) and defines {name}") from None
    if not callable(fn):
        raise RecipeError(f"method.verifier: {spec} is not a function")
    return fn


def bind_verifier(spec: str | None, problem: str, label: str | None) -> Check | None:
    """The recipe's verifier for one problem's answers (None without one). A verifier that raises
    stops the step with a one-line error naming it: a bug in a checker is not a wrong answer."""
    if spec is None or label is None:
        return None
    fn = load_verifier(spec)

    def check(answer: str) -> bool:
        from .errors import MinisirError

        try:
            return bool(fn(problem, label, answer))
        except Exception as exc:
            raise MinisirError(f"method.verifier {spec} raised {type(exc).__name__}: {exc} on answer "
                               f"{answer[:60]!r} to {one_line(problem)[:80]!r}; fix the function and resume "
                               "(the step was not committed)") from None

    return check


def audit(majority: str | None, executed: str | None) -> bool | None:
    """Whether the majority vote equals the executed answer; None when either is missing.

    The share of True over a step is the precision of its pseudo-labels.
    """
    from .answers import matches

    if majority is None or executed is None:
        return None
    return bool(matches(majority, executed))
