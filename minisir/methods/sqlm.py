"""SQLM, Self-Questioning Language Models (arXiv 2508.03682): prompts, parsing, rewards.

The proposer gets only a topic and writes a problem; the solver answers it N times.
- Math topics (arithmetic, algebra): a solver sample earns 1 when its \\boxed answer is in
  the majority class; the proposer earns 1 when the majority size m lies strictly inside
  (band_low, band_high), by default 1 < m < N: neither unanimous (too easy) nor all
  different (too hard / ill-posed).
- Coding: the proposer also writes >= min_tests stdin/stdout tests. A solver sample earns
  its pass rate (programs run in minisir.sandbox); the proposer earns 1 when the mean pass
  rate is strictly inside (pass_low, pass_high), by default (0, 1).
Invalid proposals earn 0, keep their reason, and never produce solver groups.

Pure functions only (score_code runs the sandbox, nothing else has side effects): the
loop owns the sampler, archive and trainer.

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
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..sandbox import SandboxConfig, TestCase, passed, run_batch

ChatFn = Callable[[list[dict]], str]
Topic = Literal["arithmetic", "algebra", "coding"]
TOPICS: tuple[str, ...] = ("arithmetic", "algebra", "coding")

# Stop strings for sampling (completion prompts). Excluded from the returned text.
PROPOSER_STOP_MATH: tuple[str, ...] = ("</problem>", "\nTopic:", "\n\n\n")
PROPOSER_STOP_CODING: tuple[str, ...] = ("</tests>", "\nTopic:")
SOLVER_STOP_MATH: tuple[str, ...] = ("\nProblem:", "\n\n\n")
SOLVER_STOP_CODING: tuple[str, ...] = ("```", "\nTask:")

MIN_PROBLEM_CHARS = 12
MAX_PROBLEM_CHARS = 2000
MAX_TEST_CHARS = 10_000


class SQLMConfig(BaseModel):
    """method: section of a recipe for SQLM."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["sqlm"] = "sqlm"
    topic: Topic = "arithmetic"
    proposals_per_step: int = Field(8, ge=1, le=1024)
    solver_samples: int = Field(4, ge=2, le=64, description="N answers per problem")
    band_low: int = Field(1, ge=0, description="proposer reward needs band_low < m (majority size)")
    band_high: int | None = Field(None, ge=1, description="... and m < band_high; None = solver_samples")
    pass_low: float = Field(0.0, ge=0, le=1, description="coding: proposer reward needs pass_low < mean pass rate")
    pass_high: float = Field(1.0, ge=0, le=1, description="... and mean pass rate < pass_high")
    proposer_update_every: int = Field(5, ge=1, le=100_000, description="train the proposer every k-th step")
    temperature: float = Field(1.0, gt=0, le=2.0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    proposer_max_tokens: int = Field(384, ge=16, le=8192)
    solver_max_tokens: int = Field(512, ge=16, le=8192)
    min_tests: int = Field(5, ge=1, le=100, description="coding: fewest distinct tests a proposal must have")
    max_tests: int = Field(20, ge=1, le=500, description="coding: tests beyond this are dropped (cost bound)")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    @model_validator(mode="after")
    def _bands(self) -> "SQLMConfig":
        low, high = self.band()
        if high > self.solver_samples + 1:
            raise ValueError(f"band_high={high} must be <= solver_samples + 1 ({self.solver_samples + 1})")
        if high - low < 2:
            raise ValueError(f"no majority size m satisfies {low} < m < {high}; widen band_low/band_high")
        if not self.pass_low < self.pass_high:
            raise ValueError(f"pass_low ({self.pass_low}) must be < pass_high ({self.pass_high})")
        if self.min_tests > self.max_tests:
            raise ValueError(f"min_tests ({self.min_tests}) must be <= max_tests ({self.max_tests})")
        return self

    def band(self) -> tuple[int, int]:
        """(low, high) with the open-interval meaning low < m < high."""
        return self.band_low, self.solver_samples if self.band_high is None else self.band_high


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

SOLVER_EXAMPLES_MATH: tuple[tuple[str, str], ...] = (
    ("What is 215 + 348 - 120?", "215 + 348 = 563 and 563 - 120 = 443. The answer is \\boxed{443}."),
    (
        "Ann has three times as many stamps as Ben. Together they have 48 stamps. How many stamps does Ben have?",
        "Let Ben have b stamps, so Ann has 3b. Then b + 3b = 48, 4b = 48 and b = 12. The answer is \\boxed{12}.",
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
SOLVER_INSTRUCTION_MATH = (
    "Each problem is followed by a short worked solution that ends with the final answer as \\boxed{answer}."
)
SOLVER_INSTRUCTION_CODE = (
    "Each task is solved by a complete Python 3 program that reads standard input and writes standard output."
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _format_tests(tests: Sequence[tuple[str, str]]) -> str:
    lines = ["<tests>"]
    for stdin, stdout in tests:
        lines += ["<input>", stdin, "</input>", "<output>", stdout, "</output>"]
    lines.append("</tests>")
    return "\n".join(lines)


def _check_topic(topic: str) -> None:
    if topic not in TOPICS:
        raise ValueError(f"unknown SQLM topic {topic!r}; use one of {', '.join(TOPICS)}")


def proposer_prompt(topic: str, chat: ChatFn | None = None, seed: int = 0, min_tests: int = 5) -> str:
    """Prompt asking for one new problem on `topic`; ends with "<problem>\\n".

    seed picks and orders the few-shot examples, so a batch of proposals does not all
    see the same context (a base model copies its context closely).
    """
    _check_topic(topic)
    rng = random.Random(seed)
    if chat is not None:
        fmt = "<problem>\nthe problem\n</problem>"
        if topic == "coding":
            fmt += "\n<tests>\n<input>\nstdin of test 1\n</input>\n<output>\nexpected stdout of test 1\n</output>\n...\n</tests>"
        user = (
            f"Write one new problem on this topic: {TOPIC_TEXT[topic]}.\n"
            + PROPOSER_INSTRUCTION
            + (CODING_INSTRUCTION.format(n=min_tests) if topic == "coding" else "")
            + f"\nReply exactly in this format:\n{fmt}"
        )
        return chat([{"role": "user", "content": user}]) + "<problem>\n"
    parts = [PROPOSER_INSTRUCTION + (CODING_INSTRUCTION.format(n=min_tests) if topic == "coding" else ""), ""]
    if topic == "coding":
        examples = list(CODING_EXAMPLES)
        rng.shuffle(examples)
        for problem, tests in examples[:2]:
            parts += [f"Topic: {TOPIC_TEXT[topic]}", "<problem>", problem, "</problem>", _format_tests(tests), ""]
    else:
        examples = list(PROPOSER_EXAMPLES[topic])
        rng.shuffle(examples)
        for problem in examples[:3]:
            parts += [f"Topic: {TOPIC_TEXT[topic]}", "<problem>", problem, "</problem>", ""]
    parts += [f"Topic: {TOPIC_TEXT[topic]}", "<problem>", ""]
    return "\n".join(parts)


def solver_prompt(problem: str, topic: str, chat: ChatFn | None = None) -> str:
    """Prompt asking for a solution: math ends at "Solution:", coding inside a python fence."""
    _check_topic(topic)
    if topic == "coding":
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
    line = _one_line(problem)
    if chat is not None:
        return chat([{"role": "user", "content": f"{line}\n\nSolve it step by step and put the final answer in \\boxed{{}}."}])
    parts = [SOLVER_INSTRUCTION_MATH, ""]
    for prob, sol in SOLVER_EXAMPLES_MATH:
        parts += [f"Problem: {prob}", f"Solution: {sol}", ""]
    parts += [f"Problem: {line}", "Solution:"]
    return "\n".join(parts)


def proposer_stop(topic: str) -> list[str]:
    _check_topic(topic)
    return list(PROPOSER_STOP_CODING if topic == "coding" else PROPOSER_STOP_MATH)


def solver_stop(topic: str) -> list[str]:
    _check_topic(topic)
    return list(SOLVER_STOP_CODING if topic == "coding" else SOLVER_STOP_MATH)


# --------------------------------------------------------------------------- parsing
@dataclass
class Proposal:
    problem: str | None
    tests: list[TestCase] | None = None  # coding only
    valid: bool = False
    reason: str | None = None  # why invalid; short, human readable


_ANSWER_LINE = re.compile(r"(?im)^\s*(final answer|answer|solution)\s*[:=]")
_NUMBER = re.compile(r"\d+")
_TAGS = ("<problem>", "</problem>", "<tests>", "</tests>", "<input>", "</input>", "<output>", "</output>")
_EXAMPLE_PROBLEMS = {
    _one_line(p).lower()
    for p in [*PROPOSER_EXAMPLES["arithmetic"], *PROPOSER_EXAMPLES["algebra"], *(c[0] for c in CODING_EXAMPLES)]
}


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
    text: str, topic: str, finish_reason: str = "stop", min_tests: int = 5, max_tests: int = 20
) -> Proposal:
    """Turn a proposer completion into a Proposal; never raises on model output.

    Both prompt modes end with "<problem>\\n", so the text starts inside the problem (a
    repeated leading "<problem>" is tolerated; any other stray tag makes it invalid). A
    final closing tag removed by the stop string is fine; text after the closing tag of
    the last block is ignored.
    """
    _check_topic(topic)
    if finish_reason == "length":
        return _invalid("truncated: hit the token limit")
    if not isinstance(text, str) or not text.strip():
        return _invalid("empty output")
    t = text.lstrip()
    if t.startswith("<problem>"):  # the model repeated the tag the prompt already opened
        t = t[len("<problem>") :]
    end = t.find("</problem>")
    if topic == "coding" and end < 0:
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
    if _one_line(problem).lower() in _EXAMPLE_PROBLEMS:
        return _invalid("copied a prompt example", problem)
    if topic in ("arithmetic", "algebra"):
        if "\\boxed" in problem or _ANSWER_LINE.search(problem):
            return _invalid("the problem states an answer or solution", problem)
        numbers = _NUMBER.findall(problem)
        if topic == "arithmetic" and len(numbers) < 2:
            return _invalid("an arithmetic problem needs at least two numbers", problem)
        if topic == "algebra" and not numbers:
            return _invalid("an algebra word problem needs numbers", problem)
        return Proposal(problem=problem, tests=None, valid=True, reason=None)
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


_PY_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.S | re.I)
_ANY_FENCE = re.compile(r"```[^\n`]*\r?\n(.*?)```", re.S)


def extract_code(text: str) -> str | None:
    """The program in a solver completion.

    1. the last complete ```python block, when the text has one;
    2. else, when the text contains ```: the text before it (the prompt opened the fence
       and the model closed it) or, if nothing precedes it, the first complete block;
    3. else the whole text (the prompt opened the fence and the stop string closed it).
    None when nothing but whitespace remains.
    """
    if not isinstance(text, str):
        return None
    tagged = _PY_FENCE.findall(text)
    if tagged:
        code = tagged[-1]
    elif "```" in text:
        head = text[: text.index("```")]
        if head.strip():
            code = head
        else:
            block = _ANY_FENCE.search(text)
            code = block.group(1) if block else text[text.index("```") + 3 :].partition("\n")[2]
    else:
        code = text
    return code.strip("\n") if code.strip() else None


# --------------------------------------------------------------------------- rewards
def in_band(m: int, low: int, high: int) -> bool:
    """Open interval: low < m < high."""
    return low < m < high


def math_proposer_reward(m: int, low: int, high: int) -> float:
    """1 when the majority size m is neither too small nor too large (open band)."""
    return 1.0 if in_band(m, low, high) else 0.0


def math_solver_rewards(agrees: Sequence[bool]) -> list[float]:
    """1 for each sample whose answer is in the majority class, else 0."""
    return [1.0 if a else 0.0 for a in agrees]


def code_solver_reward(passed: Sequence[bool]) -> float:
    """Share of the proposer's tests the program passed (0 with no tests)."""
    return sum(1 for p in passed if p) / len(passed) if passed else 0.0


def code_proposer_reward(rates: Sequence[float], low: float = 0.0, high: float = 1.0) -> float:
    """1 when the mean pass rate over solver samples is strictly inside (low, high)."""
    if not rates:
        return 0.0
    mean = sum(rates) / len(rates)
    return 1.0 if low < mean < high else 0.0


@dataclass
class MathScore:
    answers: list[str | None]
    majority_answer: str | None
    majority_size: int  # m
    solver_rewards: list[float]
    proposer_reward: float


def score_math(solutions: Sequence[str], cfg: SQLMConfig) -> MathScore:
    """Votes and rewards for the N solutions of one math problem."""
    from ..answers import extract_boxed, majority_vote  # lazy: math-verify import is slow

    answers = [extract_boxed(s) for s in solutions]
    vote = majority_vote(answers)
    low, high = cfg.band()
    return MathScore(
        answers=answers,
        majority_answer=vote.answer,
        majority_size=vote.count,
        solver_rewards=math_solver_rewards(vote.agrees),
        proposer_reward=math_proposer_reward(vote.count, low, high),
    )


@dataclass
class CodeScore:
    codes: list[str | None]
    passed: list[list[bool]]  # per solution, per test
    pass_rates: list[float]
    solver_rewards: list[float]
    proposer_reward: float


def score_code_batch(items: Sequence[tuple[Sequence[str], Sequence[TestCase]]], cfg: SQLMConfig) -> list[CodeScore]:
    """Score many coding problems at once: every (program, test) run shares one sandbox pool.

    items: per problem, (the N solver completions, the proposer's tests).
    """
    codes_per = [[extract_code(s) for s in sols] for sols, _ in items]
    jobs = [(c, t.stdin) for codes, (_, tests) in zip(codes_per, items) for c in codes if c is not None for t in tests]
    results = iter(run_batch(jobs, cfg.sandbox))
    scores = []
    for codes, (_, tests) in zip(codes_per, items):
        table = [[passed(next(results), t) for t in tests] if c is not None else [False] * len(tests) for c in codes]
        rates = [code_solver_reward(row) for row in table]
        scores.append(
            CodeScore(
                codes=codes,
                passed=table,
                pass_rates=rates,
                solver_rewards=list(rates),
                proposer_reward=code_proposer_reward(rates, cfg.pass_low, cfg.pass_high),
            )
        )
    return scores


def score_code(solutions: Sequence[str], tests: Sequence[TestCase], cfg: SQLMConfig) -> CodeScore:
    """Run the N solutions of one coding problem against its tests (sandboxed)."""
    return score_code_batch([(solutions, tests)], cfg)[0]


# --------------------------------------------------------------------------- groups
def proposer_updates(step: int, every: int) -> bool:
    """Whether the proposer trains at `step` (0-based): every k-th step, k = every."""
    return (step + 1) % every == 0


@dataclass
class GroupPlan:
    """Which GRPO groups a step trains; the loop turns them into trainer Samples.

    proposer_group: group id for ALL proposals of the step (invalid ones with reward 0,
        which teaches the format), or None with proposer_skip saying why.
    solver_groups: proposal index -> group id, one group per valid problem (its N samples).
    skipped: proposal index -> why it has no solver group ("invalid: ...", "all rewards equal").
    """

    proposer_group: str | None
    proposer_rewards: list[float]
    proposer_skip: str | None = None
    solver_groups: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


def plan_groups(
    step: int,
    topic: str,
    proposals: Sequence[Proposal],
    proposer_rewards: Sequence[float],
    solver_rewards: Sequence[Sequence[float] | None],
    cfg: SQLMConfig,
) -> GroupPlan:
    """Group one step's samples (analogue of opensir.select_groups).

    Groups whose rewards are all equal carry no GRPO signal and are skipped. Invalid
    proposals always get proposer reward 0 and never a solver group, whatever the caller
    passed for them.
    """
    if not (len(proposals) == len(proposer_rewards) == len(solver_rewards)):
        raise ValueError("proposals, proposer_rewards and solver_rewards must have the same length")
    rewards = [float(r) if p.valid else 0.0 for p, r in zip(proposals, proposer_rewards)]
    plan = GroupPlan(proposer_group=None, proposer_rewards=rewards)
    if not proposer_updates(step, cfg.proposer_update_every):
        plan.proposer_skip = f"proposer trains every {cfg.proposer_update_every} steps"
    elif len(set(rewards)) <= 1:
        plan.proposer_skip = "all proposer rewards equal"
    else:
        plan.proposer_group = f"sqlm:{step}:proposer:{topic}"
    for i, (p, sr) in enumerate(zip(proposals, solver_rewards)):
        if not p.valid:
            plan.skipped[i] = f"invalid: {p.reason}"
        elif not sr:
            plan.skipped[i] = "no solver samples"
        elif len(set(float(x) for x in sr)) <= 1:
            plan.skipped[i] = "all solver rewards equal"
        else:
            plan.solver_groups[i] = f"sqlm:{step}:solver:{i}"
    return plan
