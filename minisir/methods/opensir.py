"""OpenSIR (arXiv 2511.00602): a teacher writes new problems, students vote on answers.

Pure functions only (prompts, parsing, rewards, group selection): the loop owns the
sampler, archive and trainer, so everything here is testable without a model.

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
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..answers import extract_boxed

ChatFn = Callable[[list[dict]], str]

# Stops for completion prompts. The teacher stops after its concepts line or when it
# starts the next few-shot item; the student stops when it starts a new problem.
TEACHER_STOP: tuple[str, ...] = ("</concepts>", "\nReference problem:", "\n\n\n")
STUDENT_STOP: tuple[str, ...] = ("\nProblem:", "\n\n\n")

MAX_PROBLEM_CHARS = 2000
MAX_CONCEPTS_CHARS = 300
MAX_CONCEPTS = 8


class RewardWeights(BaseModel):
    """Teacher reward = sum of weight * term (each term in [0, 1])."""

    model_config = ConfigDict(extra="forbid")
    solvability: float = Field(1.0, ge=0)
    diversity: float = Field(1.0, ge=0)
    length: float = Field(0.5, ge=0)
    format: float = Field(0.1, ge=0)


class OpenSIRConfig(BaseModel):
    """method: section of a recipe for OpenSIR."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["opensir"] = "opensir"
    references_per_step: int = Field(2, ge=1, description="archive problems the teacher riffs on per step")
    teacher_samples: int = Field(8, ge=2, description="candidate problems per reference (one GRPO group)")
    student_samples: int = Field(8, ge=2, description="solutions per valid problem (vote + GRPO group)")
    temperature: float = Field(1.0, gt=0, le=2.0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    solve_low: float = Field(0.5, ge=0, le=1)
    solve_peak: float = Field(0.7, ge=0, le=1)
    solve_high: float = Field(0.9, ge=0, le=1)
    diversity_top_k: int = Field(5, ge=1)
    length_cap: int = Field(256, ge=1, description="student tokens at which the length term saturates")
    weights: RewardWeights = Field(default_factory=RewardWeights)
    student_format_weight: float = Field(0.1, ge=0)
    teacher_groups: int = Field(1, ge=0, description="teacher groups trained per step")
    student_groups: int = Field(1, ge=0, description="student groups trained per step")
    seeds: list[str] = Field(default_factory=lambda: ["What is 1+1?"], min_length=1)
    embedder: str = "bundled"
    few_shot: int = Field(2, ge=0, le=8, description="archive problems shown in the teacher prompt")
    teacher_max_tokens: int = Field(192, ge=16)
    student_max_tokens: int = Field(384, ge=16)

    @model_validator(mode="after")
    def _window(self) -> "OpenSIRConfig":
        if not (self.solve_low < self.solve_peak < self.solve_high):
            raise ValueError(
                "solve_low < solve_peak < solve_high must hold, got "
                f"solve_low={self.solve_low}, solve_peak={self.solve_peak}, solve_high={self.solve_high}"
            )
        return self


# --------------------------------------------------------------------------- prompts
# Fixed worked examples: (reference, new problem, concepts). Written for this project.
TEACHER_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        "What is 3 times 4?",
        "A rectangle is 3 times as long as it is wide and its perimeter is 48 cm. What is its area in square centimetres?",
        "perimeter, area, ratios",
    ),
    (
        "Tom has 5 apples and buys 7 more. How many apples does he have?",
        "A shirt costs $40. It is discounted by 25% and then a 10% sales tax is added. What is the final price in dollars?",
        "percentages, discounts, multi-step arithmetic",
    ),
    (
        "What is 12 divided by 4?",
        "How many positive integers less than 50 are divisible by 3 or by 5?",
        "divisibility, counting, inclusion-exclusion",
    ),
)



def few_shot_problems() -> list[str]:
    """The fixed example problems shown to the teacher. Add their embeddings to the
    diversity reference so copying an example never looks novel."""
    return [new for _, new, _ in TEACHER_EXAMPLES]


STUDENT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Sara reads 12 pages a day. How many pages does she read in 2 weeks?",
        "Two weeks have 2 * 7 = 14 days. She reads 12 * 14 = 168 pages. The answer is \\boxed{168}.",
    ),
    (
        "A train travels 150 km in 2.5 hours. What is its average speed in km per hour?",
        "Average speed is distance divided by time: 150 / 2.5 = 60 km per hour. The answer is \\boxed{60}.",
    ),
)

TEACHER_INSTRUCTION = (
    "Each reference problem below is followed by a NEW math problem that tests different "
    "mathematical concepts, is self-contained, and has a single numerical answer. "
    "The new problem is inside <problem></problem> and the concepts it uses are listed "
    "inside <concepts></concepts>."
)
STUDENT_INSTRUCTION = (
    "Solve each math problem. Reason step by step, then give the final answer in \\boxed{}."
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def teacher_prompt(reference: str, examples: Sequence[str] = (), chat: ChatFn | None = None) -> str:
    """Prompt asking for a new problem conceptually different from `reference`.

    examples: archive problems to steer away from (shown, not to be copied).
    chat=None -> completion prompt ending in "<problem>" (base models).
    """
    reference = _one_line(reference)
    existing = [_one_line(e) for e in examples if str(e).strip()]
    if chat is not None:
        avoid = ""
        if existing:
            avoid = "\nProblems that already exist (do not repeat them):\n" + "\n".join(
                f"- {e}" for e in existing
            )
        user = (
            f"Reference problem: {reference}\n{avoid}\n\n"
            "Write ONE new, self-contained math problem with a single numerical answer that "
            "uses different mathematical concepts from the reference. Reply exactly in this "
            "format:\n<problem>the new problem</problem>\n<concepts>concept 1, concept 2, ...</concepts>"
        )
        return chat([{"role": "user", "content": user}])
    parts = [TEACHER_INSTRUCTION, ""]
    for ref, new, concepts in TEACHER_EXAMPLES:
        parts += [f"Reference problem: {ref}", f"<problem>{new}</problem>", f"<concepts>{concepts}</concepts>", ""]
    if existing:
        parts += ["Problems already written (new problems must differ from these):"]
        parts += [f"- {e}" for e in existing]
        parts += [""]
    parts += [f"Reference problem: {reference}", "<problem>"]
    return "\n".join(parts)


def student_prompt(problem: str, chat: ChatFn | None = None) -> str:
    """Prompt asking for a worked solution ending in \\boxed{answer}.

    chat=None -> completion prompt ending in "Solution:" (base models).
    """
    problem = _one_line(problem)
    if chat is not None:
        return chat(
            [{"role": "user", "content": f"{problem}\n\nReason step by step and put the final answer in \\boxed{{}}."}]
        )
    parts = [STUDENT_INSTRUCTION, ""]
    for prob, sol in STUDENT_EXAMPLES:
        parts += [f"Problem: {prob}", f"Solution: {sol}", ""]
    parts += [f"Problem: {problem}", "Solution:"]
    return "\n".join(parts)


# --------------------------------------------------------------------------- parsing
@dataclass
class TeacherOutput:
    problem: str | None
    concepts: list[str] = field(default_factory=list)
    valid: bool = False
    reason: str | None = None  # why invalid, short machine-friendly tag
    concept_span: tuple[int, int] | None = None  # [start, end) chars of the concepts block in text


_P_OPEN, _P_CLOSE = "<problem>", "</problem>"
_C_OPEN, _C_CLOSE = "<concepts>", "</concepts>"


def parse_teacher(text: str, finish_reason: str = "stop") -> TeacherOutput:
    """Extract the new problem and its concepts from a teacher completion.

    Accepts text starting inside the problem (the prompt ended with "<problem>") and a
    concepts block whose closing tag was eaten by the stop string. concept_span covers
    the whole "<concepts>...</concepts>" block (tags included, to end of text when the
    closing tag is missing) so the trainer can mask it from the teacher loss.
    """
    if finish_reason == "length":
        return TeacherOutput(None, reason="truncated")
    text = text or ""
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
    concepts = [_one_line(c) for c in re.split(r"[,;\n]", body) if c.strip()]
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


# --------------------------------------------------------------------------- rewards
def solvability(s: float, low: float, high: float, peak: float) -> float:
    """Triangular: 0 outside [low, high] (and at the edges), 1 at peak, linear between.

    Problems everyone solves teach nothing; problems nobody agrees on have no usable
    pseudo label. The peak sits where the vote is still a reliable label.
    """
    if not (low < peak < high):
        raise ValueError(f"solvability: need low < peak < high, got {low}, {peak}, {high}")
    if s <= low or s >= high:
        return 0.0
    if s <= peak:
        return (s - low) / (peak - low)
    return (high - s) / (high - peak)


def length_score(mean_tokens: float, cap: float) -> float:
    """min(mean student solution tokens, cap) / cap: longer solutions = harder problems."""
    if cap <= 0:
        raise ValueError("length_score: cap must be > 0")
    return float(min(max(mean_tokens, 0.0), cap) / cap)


@dataclass
class TeacherScore:
    solvability: float
    diversity: float
    length: float
    format: float
    reward: float


def teacher_reward(
    valid: bool,
    solve_rate: float,
    diversity: float,
    mean_student_tokens: float,
    cfg: OpenSIRConfig,
) -> TeacherScore:
    """Weighted teacher reward; an invalid problem scores 0 on every term."""
    if not valid:
        return TeacherScore(0.0, 0.0, 0.0, 0.0, 0.0)
    solv = solvability(solve_rate, cfg.solve_low, cfg.solve_high, cfg.solve_peak)
    div = float(min(max(diversity, 0.0), 1.0))
    length = length_score(mean_student_tokens, cfg.length_cap)
    fmt = 1.0
    w = cfg.weights
    reward = w.solvability * solv + w.diversity * div + w.length * length + w.format * fmt
    return TeacherScore(solv, div, length, fmt, float(reward))


def student_reward(agrees: bool, boxed: bool, format_weight: float) -> float:
    """1 for agreeing with the majority, plus format_weight for a boxed answer."""
    return float(bool(agrees)) + format_weight * float(bool(boxed))


def select_groups(
    teacher_groups: dict[str, Sequence[float]],
    problem_rewards: dict[str, float | None],
    n_teacher: int,
    n_student: int,
    student_rewards: dict[str, Sequence[float]] | None = None,
) -> tuple[list[str], list[str]]:
    """Pick which GRPO groups to train this step.

    teacher_groups: group id (one per reference) -> teacher rewards of its samples.
        The n_teacher groups with the highest reward variance win (most signal);
        zero-variance groups are never picked (zero advantage).
    problem_rewards: problem key -> teacher reward, None for invalid problems.
        The student groups of the n_student best valid problems win. When
        student_rewards (problem key -> student rewards) is given, problems whose
        students all scored the same are skipped: they carry no gradient.
    Ties keep insertion order. Returns (teacher group ids, problem keys).
    """
    variances = [
        (float(np.var(np.asarray(r, dtype=np.float64))) if len(r) > 1 else 0.0, i, gid)
        for i, (gid, r) in enumerate(teacher_groups.items())
    ]
    variances = [v for v in variances if v[0] > 0.0]
    variances.sort(key=lambda v: (-v[0], v[1]))
    chosen_teacher = [gid for _, _, gid in variances[: max(n_teacher, 0)]]
    ranked = [
        (float(r), i, key) for i, (key, r) in enumerate(problem_rewards.items()) if r is not None
    ]
    if student_rewards is not None:
        ranked = [v for v in ranked if len(set(student_rewards.get(v[2], ()))) > 1]
    ranked.sort(key=lambda v: (-v[0], v[1]))
    chosen_student = [key for _, _, key in ranked[: max(n_student, 0)]]
    return chosen_teacher, chosen_student
