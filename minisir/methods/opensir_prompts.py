"""OpenSIR's prompts and the teacher's output format: few-shot completion prompts for base models
(tagged, or a problem line with its program in a fenced block), chat prompts for chat models, and
the strict parsers that turn a teacher's text into a problem (and program) or a reason it is not one.

Pure functions: tested without a model. `opensir.py` owns the step that uses them.

Prompt modes:
- chat=None (default bundled model is a BASE model): a few-shot COMPLETION prompt
  that ends right where the model must write. The teacher prompt ends with
  "<problem>", so a completion starts with the problem text; parse_teacher accepts
  text with or without the opening tag. Sampling should stop at TEACHER_STOP /
  STUDENT_STOP; a stop string is excluded from the text, so a missing "</concepts>"
  at the very end of the text is accepted (a truncated, finish_reason="length"
  output is rejected via parse_teacher's finish_reason argument instead).
- chat=callable: messages are rendered by the model's chat template and the model
  writes the full tagged answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from ..answers import extract_boxed
from ..labels import checked_program
from ..prompting import ChatFn, one_line
from ..sampler import UNFINISHED
from .common import MATH_SOLVER_STOP, math_solver_prompt


# Stops for completion prompts. The teacher stops after its concepts line or when it
# starts the next few-shot item; the student stops when it starts a new problem.
TEACHER_STOP: tuple[str, ...] = ("</concepts>", "\nReference problem:", "\n\n\n")
STUDENT_STOP: tuple[str, ...] = MATH_SOLVER_STOP

MAX_PROBLEM_CHARS = 2000
MAX_CONCEPTS_CHARS = 300
MAX_CONCEPTS = 8


# --------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class TeacherShot:
    """One worked example of the teacher's task: a reference problem, the new problem written from it,
    the concepts it tests (tags format) and the program that prints its answer (labels program/agree)."""

    reference: str
    problem: str
    concepts: str = ""
    program: str | None = None


# The default worked examples, written for this project (recipes replace them: method.teacher_examples).
TEACHER_EXAMPLES: tuple[TeacherShot, ...] = (
    TeacherShot("What is 3 times 4?",
                "A rectangle is 3 times as long as it is wide and its perimeter is 48 cm. What is its area in square "
                "centimetres?", "perimeter, area, ratios",
                "width = 48 / (2 * (3 + 1))\nprint(3 * width * width)"),
    TeacherShot("Tom has 5 apples and buys 7 more. How many apples does he have?",
                "A shirt costs $40. It is discounted by 25% and then a 10% sales tax is added. What is the final price "
                "in dollars?", "percentages, discounts, multi-step arithmetic",
                "print(40 * (1 - 0.25) * (1 + 0.10))"),
    TeacherShot("What is 12 divided by 4?",
                "How many positive integers less than 50 are divisible by 3 or by 5?",
                "divisibility, counting, inclusion-exclusion",
                "print(len([n for n in range(1, 50) if n % 3 == 0 or n % 5 == 0]))"),
)
PROGRAM_INSTRUCTION = (
    " Between them, a short Python program inside <program></program> computes the new problem's answer "
    "and prints it."
)


# The refusal of a copy (archive_stats counts it as parsed, refused before its label).
NOT_NEW = "not new: repeats a problem its prompt showed"


def repeats(problem: str, shown: Sequence[str]) -> bool:
    """Whether a teacher's problem is one of the problems its prompt showed (the reference, the
    archive examples, the worked examples), case and spacing aside: a copy is not a new problem."""
    squash = lambda t: re.sub(r"\s+", "", str(t)).lower()  # noqa: E731
    return squash(problem) in {squash(t) for t in shown}


def few_shot_problems(shots: Sequence[TeacherShot] = TEACHER_EXAMPLES) -> list[str]:
    """The fixed example problems shown to the teacher. Add their embeddings to the
    diversity reference so copying an example never looks novel."""
    return [shot.problem for shot in shots]


TEACHER_INSTRUCTION = (
    "Each reference problem below is followed by a NEW math problem that tests different "
    "mathematical concepts, is self-contained, and has a single numerical answer. "
    "The new problem is inside <problem></problem> and the concepts it uses are listed "
    "inside <concepts></concepts>."
)


def teacher_prompt(reference: str, examples: Sequence[str] = (), chat: ChatFn | None = None,
                   think: bool = False, program: bool = False, shots: Sequence[TeacherShot] = TEACHER_EXAMPLES) -> str:
    """Prompt asking for a new problem conceptually different from `reference`.

    examples: archive problems to steer away from (shown, not to be copied).
    chat=None -> completion prompt ending in "<problem>" (base models).
    think: ask the model to explain first, inside <think>, how its problem differs (reference).
    program: the problem is followed by a <program> that prints its answer (labels: program/agree).
    shots: the worked examples of a completion prompt (each needs its program when `program`).
    """
    reference = one_line(reference)
    existing = [one_line(e) for e in examples if str(e).strip()]
    if chat is not None:
        avoid = ""
        if existing:
            avoid = "\nProblems that already exist (do not repeat them):\n" + "\n".join(
                f"- {e}" for e in existing
            )
        first = ("First explain briefly, inside <think></think>, which different concepts your problem will test. "
                 "Then reply") if think else "Reply"
        fmt = ("<think>how the new problem differs</think>\n" if think else "") + (
            "<problem>the new problem</problem>\n"
            + ("<program>print(the computation)</program>\n" if program else "")
            + "<concepts>concept 1, concept 2, ...</concepts>")
        user = (
            f"Reference problem: {reference}\n{avoid}\n\n"
            "Write ONE new, self-contained math problem with a single numerical answer that "
            f"uses different mathematical concepts from the reference."
            + (" Also write a short Python program that computes its answer and prints it." if program else "")
            + f" {first} exactly in this format:\n{fmt}"
        )
        return chat([{"role": "user", "content": user}])
    parts = [TEACHER_INSTRUCTION + (PROGRAM_INSTRUCTION if program else ""), ""]
    for shot in shots:
        parts += [f"Reference problem: {one_line(shot.reference)}", f"<problem>{one_line(shot.problem)}</problem>"]
        parts += ["<program>", str(shot.program), "</program>"] if program else []
        parts += [f"<concepts>{shot.concepts}</concepts>", ""]
    if existing:
        parts += ["Problems already written (new problems must differ from these):"]
        parts += [f"- {e}" for e in existing]
        parts += [""]
    parts += [f"Reference problem: {reference}", "<problem>"]
    return "\n".join(parts)


FENCED_INSTRUCTION = (
    "Each reference problem below is followed by a new, self-contained math problem that tests different "
    "mathematical concepts and has a single numerical answer."
)
FENCED_PROGRAM_INSTRUCTION = " A short Python program after each new problem computes its answer and prints it."
FENCED_STOP: tuple[str, ...] = ("\n```\n", "\nReference problem:", "\n\n\n")
FENCED_PROBLEM_STOP: tuple[str, ...] = ("\n", )  # without programs the problem is one line


def fenced_teacher_prompt(reference: str, examples: Sequence[str] = (), program: bool = False,
                          shots: Sequence[TeacherShot] = TEACHER_EXAMPLES) -> str:
    """Few-shot completion prompt in shapes a base model saw in pretraining; ends with "New problem:".

    Each example is a "Reference problem:" line, a "New problem:" line and (program) its program
    in a ```python block. No concepts: the reference only gates on them and never trains on them.
    """
    parts = [FENCED_INSTRUCTION + (FENCED_PROGRAM_INSTRUCTION if program else ""), ""]
    for shot in shots:
        parts += [f"Reference problem: {one_line(shot.reference)}", f"New problem: {one_line(shot.problem)}"]
        parts += ["```python", str(shot.program), "```"] if program else []
        parts += [""]
    existing = [one_line(e) for e in examples if str(e).strip()]
    if existing:
        parts += ["Problems already written (new problems must differ from these):"]
        parts += [f"- {e}" for e in existing] + [""]
    parts += [f"Reference problem: {one_line(reference)}", "New problem:"]
    return "\n".join(parts)


_FENCE_OPEN = re.compile(r"\n```(?:python|py)?[ \t]*(?:\n|$)")


def parse_fenced(text: str, finish_reason: str = "stop", program: bool = False) -> TeacherOutput:
    """The problem line and (program) the ```python block after it, from a fenced completion.

    The stop string "\\n```\\n" eats the closing fence, so a block may run to the end of the text.
    """
    if finish_reason in UNFINISHED:
        return TeacherOutput(None, reason="truncated" if finish_reason == "length" else "looped")
    text = text or ""
    fence = _FENCE_OPEN.search("\n" + text) if program else None
    head = text if fence is None else ("\n" + text)[: fence.start()]
    problem = one_line(head.strip().split("\n\n")[0]) if head.strip() else ""
    if problem.lower().startswith("new problem:"):
        problem = problem[len("new problem:"):].strip()
    if not problem:
        return TeacherOutput(None, reason="empty problem")
    if len(problem) > MAX_PROBLEM_CHARS:
        return TeacherOutput(problem, reason="problem too long")
    if "\\boxed" in problem:
        return TeacherOutput(problem, reason="problem contains an answer")
    if not program:
        return TeacherOutput(problem, valid=True)
    if fence is None:
        return TeacherOutput(problem, reason="missing ```python block")
    code, why = checked_program(("\n" + text)[fence.end():].split("\n```")[0])
    if code is None:
        return TeacherOutput(problem, reason=why)
    return TeacherOutput(problem, valid=True, program=code)


def teacher_stop(chat: bool, fenced: bool = False, program: bool = False) -> list[str]:
    """Completion prompts stop at the concepts' end (fenced: the program's closing fence, or the
    problem's line without programs) or the next few-shot item; chat prompts end at the end of
    turn (a completion-mode stop would cut their answer)."""
    if chat:
        return []
    if fenced:
        return list(FENCED_STOP) if program else list(FENCED_PROBLEM_STOP + FENCED_STOP[1:])
    return list(TEACHER_STOP)


def student_stop(chat: bool) -> list[str]:
    return [] if chat else list(STUDENT_STOP)


def student_prompt(problem: str, chat: ChatFn | None = None) -> str:
    """Prompt asking for a worked solution ending in \\boxed{answer} (shared by every method)."""
    return math_solver_prompt(problem, chat)


# --------------------------------------------------------------------------- parsing
@dataclass
class TeacherOutput:
    problem: str | None
    concepts: list[str] = field(default_factory=list)
    valid: bool = False
    reason: str | None = None  # why invalid, short machine-friendly tag
    concept_span: tuple[int, int] | None = None  # [start, end) chars of the concepts block in text
    has_think: bool = False  # a non-empty <think>...</think> block precedes the problem
    program: str | None = None  # the <program> between the problem and its concepts, when written


_P_OPEN, _P_CLOSE = "<problem>", "</problem>"
_C_OPEN, _C_CLOSE = "<concepts>", "</concepts>"


def parse_teacher(text: str, finish_reason: str = "stop") -> TeacherOutput:
    """Extract the new problem and its concepts from a teacher completion.

    Accepts text starting inside the problem (the prompt ended with "<problem>") and a
    concepts block whose closing tag was eaten by the stop string. concept_span covers
    the whole "<concepts>...</concepts>" block (tags included, to end of text when the
    closing tag is missing) so the trainer can mask it from the teacher loss.
    """
    if finish_reason in UNFINISHED:
        return TeacherOutput(None, reason="truncated" if finish_reason == "length" else "looped")
    text = text or ""
    out = _parse_tagged(text)
    t_open, t_close = text.find("<think>"), text.find("</think>")
    p_at = text.find(_P_OPEN) if _P_OPEN in text else text.find(_P_CLOSE)
    out.has_think = 0 <= t_open < t_close < p_at and bool(text[t_open + 7:t_close].strip())
    out.program = _program_between(text)
    return out


def _program_between(text: str) -> str | None:
    """The <program> block after </problem> and before <concepts>, stripped; None when absent."""
    start, end = text.find("<program>"), text.find("</program>")
    p_close, c_open = text.find(_P_CLOSE), text.find(_C_OPEN)
    if not (0 <= p_close < start < end) or (c_open >= 0 and end > c_open):
        return None
    return checked_program(text[start + len("<program>"):end])[0]


def _parse_tagged(text: str) -> TeacherOutput:
    for tag in (_P_OPEN, _P_CLOSE, _C_OPEN, _C_CLOSE):
        if text.count(tag) > 1:
            return TeacherOutput(None, reason=f"duplicate {tag}")
    p_close = text.find(_P_CLOSE)
    if p_close < 0:
        return TeacherOutput(None, reason="missing </problem>")
    p_open = text.find(_P_OPEN)
    if p_open > p_close:
        return TeacherOutput(None, reason="misordered <problem>")
    start = p_open + len(_P_OPEN) if p_open >= 0 else 0
    think_end = text.find("</think>")
    if p_open < 0 and 0 <= think_end < p_close:  # "<think>..</think> problem</problem>"
        start = think_end + len("</think>")
    problem = text[start:p_close].strip()
    c_open = text.find(_C_OPEN)
    if c_open < 0:
        return TeacherOutput(problem or None, reason="missing <concepts>")
    if c_open < p_close:
        return TeacherOutput(problem or None, reason="misordered <concepts>")
    c_close = text.find(_C_CLOSE)
    if c_close < 0:
        # Stop string "</concepts>" is excluded from the text: allowed only at the end.
        body = text[c_open + len(_C_OPEN):]
        if "\n\n" in body.strip() or "<" in body:
            return TeacherOutput(problem or None, reason="missing </concepts>")
        span = (c_open, len(text))
    else:
        if c_close < c_open:
            return TeacherOutput(problem or None, reason="misordered </concepts>")
        body = text[c_open + len(_C_OPEN):c_close]
        span = (c_open, c_close + len(_C_CLOSE))
    concepts = [one_line(c) for c in re.split(r"[,;\n]", body) if c.strip()]
    if not problem:
        return TeacherOutput(None, concepts, reason="empty problem", concept_span=span)
    if len(problem) > MAX_PROBLEM_CHARS:
        return TeacherOutput(problem, concepts, reason="problem too long", concept_span=span)
    if "\\boxed" in problem:
        return TeacherOutput(problem, concepts, reason="problem contains an answer", concept_span=span)
    if not concepts:
        return TeacherOutput(problem, concepts, reason="empty concepts", concept_span=span)
    if len(body) > MAX_CONCEPTS_CHARS or len(concepts) > MAX_CONCEPTS:
        return TeacherOutput(problem, concepts, reason="concepts too long", concept_span=span)
    return TeacherOutput(problem, concepts, valid=True, concept_span=span)


def has_box(text: str) -> bool:
    """Student format check: a complete \\boxed{} answer is present."""
    return extract_boxed(text) is not None
