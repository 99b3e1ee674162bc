"""SQLM's prompts and proposal parsing: what the proposer and solvers are asked, and the strict
reading of what the proposer wrote (sqlm.py scores and trains it).

Prompt modes (same contract as methods.opensir):
- chat=None: the default model is a BASE model, so prompts are few-shot COMPLETIONS
  that end exactly where the model writes. The proposer prompt ends with "<problem>\\n";
  the coding solver prompt ends inside a "```python" fence. Sample with the stop
  strings from proposer_stop()/solver_stop(); stop strings are excluded from the text,
  which the parsers expect (a missing final closing tag is fine; a truncated,
  finish_reason="length" output is rejected through the finish_reason argument).
- chat=callable: chat(messages) renders the chat template with the generation prompt;
  the same prefixes ("<problem>\\n", "```python\\n") are appended, so parsing is shared.

Proposal format (parsed strictly)::

    <problem>
    statement
    </problem>
    <tests>            (coding only)
    <input>
    stdin text
    </input>
    <output>
    expected stdout
    </output>
    ... (at least min_tests input/output pairs, nothing else between them)
    </tests>
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal, Sequence

from ..labels import bare_expression, checked_program
from ..prompting import ChatFn, one_line
from ..sandbox import TestCase
from ..sampler import UNFINISHED
from .common import MATH_SOLVER_STOP, math_solver_prompt

Topic = Literal["arithmetic", "algebra", "coding"]


TOPICS: tuple[str, ...] = ("arithmetic", "algebra", "coding")


# Stop strings for sampling (completion prompts). Excluded from the returned text.
PROPOSER_STOP_MATH: tuple[str, ...] = ("</problem>", "\nTopic:", "\n\n\n")


PROPOSER_STOP_LABELLED: tuple[str, ...] = ("</program>", "\nTopic:", "\n\n\n")


PROPOSER_STOP_CODING: tuple[str, ...] = ("</tests>", "\nTopic:")


SOLVER_STOP_MATH: tuple[str, ...] = MATH_SOLVER_STOP


SOLVER_STOP_CODING: tuple[str, ...] = ("```", "\nTask:")


MIN_PROBLEM_CHARS = 12


MAX_PROBLEM_CHARS = 2000


MAX_TEST_CHARS = 10_000


# --------------------------------------------------------------------------- prompts
TOPIC_TEXT: dict[str, str] = {
    "arithmetic": "three-digit arithmetic: one calculation with two to four whole numbers from 100 to 999 "
    "using +, -, * or / (divisions come out exact)",
    "algebra": "an algebra word problem solved with linear equations in one or two unknowns with integer "
    "coefficients; the answer is one number",
    "coding": "an easy programming task: a program reads text from standard input and prints text to "
    "standard output",
}


# Written for this project. Several per topic so a seed can vary what the base model sees.
PROPOSER_EXAMPLES: dict[str, tuple[str, ...]] = {
    "arithmetic": (
        "What is 482 + 317 - 205?",
        "Compute 736 - 148 * 3.",
        "What is 912 / 304 + 657?",
        "Calculate 125 * 4 + 389 - 276.",
    ),
    "algebra": (
        "A notebook costs 3 dollars more than a pen. Four pens and two notebooks cost 30 dollars. "
        "How many dollars does one pen cost?",
        "The sum of two numbers is 56 and their difference is 14. What is the larger number?",
        "A farm has chickens and cows, 40 animals in all with 110 legs. How many cows are on the farm?",
        "Maya is 6 years older than her brother. In 4 years, twice her brother's age will equal Maya's age "
        "plus 2. How old is Maya now?",
    ),
}


# Programs of the built-in examples that are not bare expressions (labels: program/agree).
EXAMPLE_PROGRAMS: dict[str, str] = {
    PROPOSER_EXAMPLES["algebra"][0]: "pen = (30 - 2 * 3) / (4 + 2)\nprint(pen)",
    PROPOSER_EXAMPLES["algebra"][1]: "print((56 + 14) / 2)",
    PROPOSER_EXAMPLES["algebra"][2]: "cows = (110 - 2 * 40) / 2\nprint(cows)",
    PROPOSER_EXAMPLES["algebra"][3]: "brother = (6 + 4 + 2 - 8) / (2 - 1)\nprint(brother + 6)",
}


def example_parts(example: str | dict) -> tuple[str, str | None]:
    """(problem, program or None) of a few-shot example; a bare expression's program is print(it)."""
    if isinstance(example, dict):
        problem, program = str(example["problem"]), example.get("program")
    else:
        problem, program = str(example), EXAMPLE_PROGRAMS.get(str(example))
    if program is None and (expr := bare_expression(problem)) is not None:
        program = f"print({expr})"
    return problem, (str(program).strip() if program is not None else None)


CODING_EXAMPLES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Read one line of words separated by single spaces and print the words in reverse order, "
        "separated by single spaces.",
        (("hello world", "world hello"), ("a b c", "c b a"), ("one", "one"),
         ("red green blue yellow", "yellow blue green red"), ("x y", "y x")),
    ),
    (
        "The first line holds an integer n. The second line holds n integers. Print the largest of them.",
        (("3\n1 5 2", "5"), ("1\n-4", "-4"), ("5\n7 7 7 7 7", "7"), ("4\n-1 -9 0 -3", "0"), ("2\n100 99", "100")),
    ),
    (
        "Read a word and print how many vowels (a, e, i, o, u) it contains.",
        (("banana", "3"), ("sky", "0"), ("education", "5"), ("a", "1"), ("rhythm", "0")),
    ),
)


SOLVER_EXAMPLE_CODE: tuple[str, str] = (
    "Read two integers on one line and print their sum.",
    "a, b = map(int, input().split())\nprint(a + b)",
)


PROPOSER_INSTRUCTION = (
    "A teacher writes new practice problems for a given topic. Every problem is self-contained, "
    "has exactly one correct answer, and never states its answer."
)


CODING_INSTRUCTION = (
    " Programming tasks come with at least {n} tests; each test gives the exact standard input "
    "and the exact expected standard output."
)


PROGRAM_INSTRUCTION = (
    " After each problem, a short Python program inside <program></program> computes the answer from the "
    "problem's own numbers and prints it."
)


SOLVER_INSTRUCTION_CODE = (
    "Each task is solved by a complete Python 3 program that reads standard input and writes standard output."
)


def _format_tests(tests: Sequence[tuple[str, str]]) -> str:
    lines = ["<tests>"]
    for stdin, stdout in tests:
        lines += ["<input>", stdin, "</input>", "<output>", stdout, "</output>"]
    lines.append("</tests>")
    return "\n".join(lines)


def topic_kind(topic: str, kind: str | None = None) -> str:
    """number or program for a topic: a built-in's own, or the kind given for your own topic."""
    if kind is not None:
        if kind not in ("number", "program"):
            raise ValueError(f"unknown answer kind {kind!r}; use number or program")
        return kind
    if topic not in TOPICS:
        raise ValueError(f"SQLM topic {topic[:40]!r} is not built in ({', '.join(TOPICS)}): give its answer kind")
    return "program" if topic == "coding" else "number"


def _topic_text(topic: str) -> str:
    return TOPIC_TEXT.get(topic, one_line(topic))


def proposer_prompt(topic: str, chat: ChatFn | None = None, seed: int = 0, min_tests: int = 5,
                    kind: str | None = None, examples: Sequence[str | dict] = (), program: bool = False,
                    frontier: Sequence[dict] = ()) -> str:
    """Prompt asking for one new problem on `topic`; ends with "<problem>\\n".


    seed picks and orders the few-shot examples, so a batch of proposals does not all
    see the same context (a base model copies its context closely). `examples` (your own
    topic's) replace a built-in topic's number examples. program: each problem is followed
    by a <program> that prints its answer (labels: program/agree). frontier: the run's own
    problems ({problem, program}) that take the last few-shot places (the curriculum).
    """
    coding = topic_kind(topic, kind) == "program"
    program = program and not coding
    text = _topic_text(topic)
    rng = random.Random(seed)
    extra = CODING_INSTRUCTION.format(n=min_tests) if coding else (PROGRAM_INSTRUCTION if program else "")
    if chat is not None:
        fmt = "<problem>\nthe problem\n</problem>"
        if coding:
            fmt += "\n<tests>\n<input>\nstdin of test 1\n</input>\n<output>\nexpected stdout of test 1\n</output>\n...\n</tests>"
        if program:
            fmt += "\n<program>\nprint(the computation)\n</program>"
        user = (
            f"Write one new problem on this topic: {text}.\n"
            + PROPOSER_INSTRUCTION
            + extra
            + f"\nReply exactly in this format:\n{fmt}"
        )
        return chat([{"role": "user", "content": user}]) + "<problem>\n"
    parts = [PROPOSER_INSTRUCTION + extra, ""]
    if coding:
        shots = list(CODING_EXAMPLES)
        rng.shuffle(shots)
        for problem, tests in shots[:2]:
            parts += [f"Topic: {text}", "<problem>", problem, "</problem>", _format_tests(tests), ""]
    else:
        shots = list(examples) or list(PROPOSER_EXAMPLES.get(topic, ()))
        rng.shuffle(shots)
        shots = shots[: max(0, 3 - len(frontier))] + list(frontier)  # nearest the new problem: the frontier
        for shot in shots:
            problem, code = example_parts(shot)
            parts += [f"Topic: {text}", "<problem>", one_line(problem), "</problem>"]
            parts += ["<program>", code or "", "</program>", ""] if program else [""]
    parts += [f"Topic: {text}", "<problem>", ""]
    return "\n".join(parts)


def solver_prompt(problem: str, topic: str, chat: ChatFn | None = None, kind: str | None = None) -> str:
    """Prompt asking for a solution: math ends at "Solution:", coding inside a python fence."""
    if topic_kind(topic, kind) == "program":
        if chat is not None:
            user = (
                f"{problem.strip()}\n\nWrite a complete Python 3 program for this task. It must read standard "
                "input and print the answer to standard output. Reply with the program only."
            )
            return chat([{"role": "user", "content": user}]) + "```python\n"
        task, code = SOLVER_EXAMPLE_CODE
        parts = [SOLVER_INSTRUCTION_CODE, "", "Task:", task, "Program:", "```python", code, "```", ""]
        parts += ["Task:", problem.strip(), "Program:", "```python", ""]
        return "\n".join(parts)
    return math_solver_prompt(problem, chat)


def proposer_stop(topic: str, chat: bool = False, kind: str | None = None, program: bool = False) -> list[str]:
    """Completion prompts also stop at the next few-shot item; chat prompts only at the
    format's own closing tag (a completion-mode stop would cut a chat model's answer)."""
    coding = topic_kind(topic, kind) == "program"
    program = program and not coding
    if chat:
        return ["</tests>"] if coding else (["</program>"] if program else ["</problem>"])
    return list(PROPOSER_STOP_CODING if coding else (PROPOSER_STOP_LABELLED if program else PROPOSER_STOP_MATH))


def solver_stop(topic: str, chat: bool = False, kind: str | None = None) -> list[str]:
    """The coding prompt opens a fence, so its closing fence ends the program in both modes."""
    coding = topic_kind(topic, kind) == "program"
    if chat:
        return ["```"] if coding else []
    return list(SOLVER_STOP_CODING if coding else SOLVER_STOP_MATH)


# --------------------------------------------------------------------------- parsing
@dataclass
class Proposal:
    problem: str | None
    tests: list[TestCase] | None = None  # coding only
    valid: bool = False
    reason: str | None = None  # why invalid; short, human readable
    program: str | None = None  # number answers: the <program> that prints the answer, when written


_ANSWER_LINE = re.compile(r"(?im)^\s*(final answer|answer|solution)\s*[:=]")


_NUMBER = re.compile(r"\d+")


_TAGS = ("<problem>", "</problem>", "<tests>", "</tests>", "<input>", "</input>", "<output>", "</output>",
         "<program>", "</program>")


_EXAMPLE_PROBLEMS = {
    one_line(p).lower()
    for p in [*PROPOSER_EXAMPLES["arithmetic"], *PROPOSER_EXAMPLES["algebra"], *(c[0] for c in CODING_EXAMPLES)]
}


def _program_block(rest: str) -> str | None:
    """The <program> right after </problem> (its closing tag may be the eaten stop string)."""
    rest = rest.lstrip()
    if not rest.startswith("<program>"):
        return None
    body = rest[len("<program>"):]
    end = body.find("</program>")
    return checked_program(_strip_block(body if end < 0 else body[:end]))[0]


def _invalid(reason: str, problem: str | None = None) -> Proposal:
    return Proposal(problem=problem, tests=None, valid=False, reason=reason)


def _strip_block(s: str) -> str:
    """Content of a tag written on its own lines: drop one newline after the opening tag
    and one before the closing tag; keep everything else verbatim."""
    if s.startswith("\r\n"):
        s = s[2:]
    elif s.startswith("\n"):
        s = s[1:]
    if s.endswith("\r\n"):
        s = s[:-2]
    elif s.endswith("\n"):
        s = s[:-1]
    return s


def parse_tests(block: str, min_tests: int = 5, max_tests: int = 20) -> tuple[list[TestCase] | None, str | None]:
    """Strictly parse the inside of <tests>...</tests>: only <input>/<output> pairs and whitespace.


    Returns (tests, None) or (None, reason).
    """
    tests: list[TestCase] = []
    seen: dict[str, str] = {}
    pos, n = 0, len(block)
    while True:
        while pos < n and block[pos].isspace():
            pos += 1
        if pos >= n:
            break
        pair = []
        for tag in ("input", "output"):
            while pos < n and block[pos].isspace():
                pos += 1
            opening, closing = f"<{tag}>", f"</{tag}>"
            if not block.startswith(opening, pos):
                near = block[pos : pos + 30]
                return None, f"test {len(tests) + 1}: expected {opening}, found {near!r}"
            end = block.find(closing, pos + len(opening))
            if end < 0:
                return None, f"test {len(tests) + 1}: {opening} is not closed"
            body = block[pos + len(opening) : end]
            if any(t in body for t in _TAGS):
                return None, f"test {len(tests) + 1}: a tag inside {opening}"
            if len(body) > MAX_TEST_CHARS:
                return None, f"test {len(tests) + 1}: {tag} longer than {MAX_TEST_CHARS} characters"
            pair.append(_strip_block(body))
            pos = end + len(closing)
        stdin, expected = pair
        if stdin and not stdin.endswith("\n"):
            stdin += "\n"
        key = stdin
        if key in seen:
            if seen[key].rstrip() != expected.rstrip():
                return None, f"test {len(tests) + 1}: contradicts an earlier test with the same input"
            continue  # an exact duplicate adds nothing
        seen[key] = expected
        tests.append(TestCase(stdin=stdin, expected_stdout=expected))
    if len(tests) < min_tests:
        return None, f"only {len(tests)} distinct tests, need at least {min_tests}"
    if all(not t.expected_stdout.strip() for t in tests):
        return None, "every expected output is empty"
    return tests[:max_tests], None


def parse_proposal(
    text: str, topic: str, finish_reason: str = "stop", min_tests: int = 5, max_tests: int = 20,
    kind: str | None = None, examples: Sequence[str | dict] = (),
) -> Proposal:
    """Turn a proposer completion into a Proposal; never raises on model output.


    Both prompt modes end with "<problem>\\n", so the text starts inside the problem (a
    repeated leading "<problem>" is tolerated; any other stray tag makes it invalid). A
    final closing tag removed by the stop string is fine; text after the closing tag of
    the last block is ignored.
    """
    coding = topic_kind(topic, kind) == "program"
    if finish_reason in UNFINISHED:
        return _invalid("truncated: hit the token limit" if finish_reason == "length"
                        else "looped: its text repeated itself")
    if not isinstance(text, str) or not text.strip():
        return _invalid("empty output")
    t = text.lstrip()
    if t.startswith("<problem>"):  # the model repeated the tag the prompt already opened
        t = t[len("<problem>") :]
    end = t.find("</problem>")
    if coding and end < 0:
        return _invalid("missing </problem> before the tests")
    body, rest = (t, "") if end < 0 else (t[:end], t[end + len("</problem>") :])
    problem = body.strip()
    if any(tag in problem for tag in _TAGS):
        return _invalid("stray tag inside the problem", problem or None)
    if not problem:
        return _invalid("empty problem")
    if len(problem) < MIN_PROBLEM_CHARS:
        return _invalid("problem too short", problem)
    if len(problem) > MAX_PROBLEM_CHARS:
        return _invalid(f"problem longer than {MAX_PROBLEM_CHARS} characters", problem)
    if one_line(problem).lower() in _EXAMPLE_PROBLEMS | {one_line(example_parts(e)[0]).lower() for e in examples}:
        return _invalid("copied a prompt example", problem)
    if not coding:
        if "\\boxed" in problem or _ANSWER_LINE.search(problem):
            return _invalid("the problem states an answer or solution", problem)
        numbers = _NUMBER.findall(problem)
        if topic == "arithmetic" and len(numbers) < 2:
            return _invalid("an arithmetic problem needs at least two numbers", problem)
        if topic == "algebra" and not numbers:
            return _invalid("an algebra word problem needs numbers", problem)
        return Proposal(problem=problem, tests=None, valid=True, reason=None, program=_program_block(rest))
    rest = rest.lstrip()
    if not rest.startswith("<tests>"):
        return _invalid("missing <tests> after the problem", problem)
    block = rest[len("<tests>") :]
    close = block.find("</tests>")
    if close >= 0:
        block = block[:close]
    tests, reason = parse_tests(block, min_tests=min_tests, max_tests=max_tests)
    if tests is None:
        return _invalid(reason or "bad tests", problem)
    return Proposal(problem=problem, tests=tests, valid=True, reason=None)


# --------------------------------------------------------------------------- the step
def eval_prompt(question: str, chat: ChatFn | None = None) -> str:
    """Held-out questions are asked with the solver prompt this method trains (number answers)."""
    return solver_prompt(question, "arithmetic", chat, kind="number")


def eval_stop(chat: bool) -> list[str]:
    return solver_stop("arithmetic", chat, kind="number")
