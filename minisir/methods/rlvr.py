"""RLVR: GRPO on questions whose answers are known (the control for self-play).

No teacher: each round takes the next `questions_per_step` questions of a training
stream, samples `samples` solutions of each with the shared math solver prompt, and
rewards a solution 1 when its \\boxed{} answer gives the known answer
(answers.matches: a number, not the sum restated), else 0. One GRPO group per question.

Why it exists: it is what a TRL GRPOTrainer user does with their own data, here on
llama.cpp sampling and ending in a GGUF; and it is the ceiling for self-play with
executed labels on the same model and budget. If this cannot move the held-out score,
no pseudo-label can, and the trainer's settings are what to fix.

Questions come from a built-in generator's *training* split (evaluate.question_split:
disjoint from every question `minisir eval` asks, by text) or from a JSONL file of
{"question", "answer"} lines, read in a seeded order that cycles.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..archive_schema import PROBLEM_COLUMNS
from ..labels import VERIFIER_DESCRIPTION, verifier_spec
from ..prompting import ChatFn
from .common import METRICS as COMMON_METRICS
from .common import (MATH_SOLVER_STOP, SamplingConfig, completion_fields, math_solver_prompt, max_tokens_field,
                     mean_or_none, temperature_field, to_sample, top_p_field)

if TYPE_CHECKING:
    from ..evaluate import Question
    from .common import Context, Phase, StepResult

GENERATORS = ("arithmetic-easy", "arithmetic-medium")



class RLVRConfig(BaseModel):
    """method: section of a recipe for RLVR (known answers)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["rlvr"] = "rlvr"
    questions: str = Field("arithmetic-easy", min_length=1, description=(
        "arithmetic-easy | arithmetic-medium (the generator's training split, which never "
        "shares a question with `minisir eval`), or a JSONL file with one {\"question\", \"answer\"} per line"))
    questions_per_step: int = Field(8, ge=1, le=4096, description="questions per round, one GRPO group each")
    samples: int = Field(8, ge=2, le=64, description="solutions sampled per question (the group size G)")
    temperature: float = temperature_field(0.6, "the solutions")
    top_p: float = top_p_field(0.95, "the solutions")
    max_tokens: int = max_tokens_field(160, "solution", le=8192)
    verifier: str | None = Field(None, description=VERIFIER_DESCRIPTION)

    @field_validator("verifier")
    @classmethod
    def _verifier_shape(cls, value: str | None) -> str | None:
        return verifier_spec(value)

    @field_validator("questions")
    @classmethod
    def _known_source(cls, value: str) -> str:
        from pathlib import Path

        if value not in GENERATORS and not Path(value).expanduser().is_file():
            raise ValueError(f"{value!r} is neither a built-in generator ({', '.join(GENERATORS)}) nor a JSONL file")
        return value

    def reward_scale(self) -> float:
        return 1.0

    def sampling(self) -> SamplingConfig:
        return SamplingConfig.of(self.temperature, self.top_p, self.max_tokens)


# --------------------------------------------------------------------------- questions
def training_questions(source: str, start: int, n: int, seed: int) -> list["Question"]:
    """Questions start .. start + n - 1 of the run's training stream."""
    from ..evaluate import load_arithmetic, load_jsonl

    if source in GENERATORS:
        return load_arithmetic(n, seed, source.removeprefix("arithmetic-"), split="train", start=start)
    pool = load_jsonl(source)
    if not pool:
        from ..errors import RecipeError

        raise RecipeError(f"method.questions: {source} holds no questions")
    order = list(range(len(pool)))
    random.Random(f"rlvr:{seed}").shuffle(order)
    return [pool[order[(start + j) % len(pool)]] for j in range(n)]


# --------------------------------------------------------------------------- the step
def eval_prompt(question: str, chat: ChatFn | None = None) -> str:
    """Held-out questions are asked exactly as training questions are."""
    return math_solver_prompt(question, chat)


def eval_stop(chat: bool) -> list[str]:
    return [] if chat else list(MATH_SOLVER_STOP)


# How this method's step metrics combine over rounds (methods.common.METRICS says how to read it).
METRICS = {**COMMON_METRICS, "questions": "sum", "solver_groups_with_signal": "sum"}


def play(runner: "Context", step: int, phase: "Phase", round_: int = 0) -> "StepResult":
    """One round: the next questions of the stream, `samples` solutions each, rewards by the known answer."""
    from .common import StepResult, step_seed, tokens_per_s

    cfg: RLVRConfig = runner.method
    seed = runner.seed
    prefix = f"{step}" if round_ == 0 else f"{step}r{round_}"
    start = (step * runner.rounds_per_step + round_) * cfg.questions_per_step
    with phase("questions"):
        questions = training_questions(cfg.questions, start, cfg.questions_per_step, seed)
    with phase("solver"):
        t = time.perf_counter()
        solved = runner.sampler.generate(
            [math_solver_prompt(q.question, runner.chat) for q in questions], n=cfg.samples,
            **cfg.sampling().kwargs(), seed=step_seed(seed, step, "solver", round_),
            stop=eval_stop(runner.chat is not None))
        solver_tps = tokens_per_s(solved, time.perf_counter() - t)
    with phase("rewards"):
        judged = [_judge(cfg, f"{prefix}-{i}", f"rlvr:{prefix}:{i}", q, group)
                  for i, (q, group) in enumerate(zip(questions, solved))]
    problems = [row for row, _, _, _ in judged]
    solutions = [s for _, sols, _, _ in judged for s in sols]
    samples = [s for _, _, group, _ in judged for s in group]
    audits = [a for _, _, _, a in judged if a is not None]
    return StepResult(problems, solutions, samples, _metrics(problems, samples, audits, solved, solver_tps))


def _judge(cfg: RLVRConfig, key: str, group_id: str, q: Any, group: list) -> tuple[dict, list[dict], list, bool | None]:
    """One question's archive row, solution rows, trainer samples and audit (the vote against the known answer)."""
    from ..labels import bind_verifier, judge

    verdicts = judge([c.text for c in group], q.answer, bind_verifier(cfg.verifier, q.question, q.answer))
    rewards = [1.0 if ok else 0.0 for ok in verdicts.correct]
    row = {
        "key": key, "text": q.question, "role": "question", "method": "rlvr", "valid": True,
        "majority_answer": verdicts.vote.answer, "solve_rate": sum(rewards) / len(rewards), "n_samples": len(group),
        "label": q.answer, "label_source": "known", "question_id": q.id,
    }
    # a question's own fields (a generator's kind, a user's JSONL extras) go to the row's extra;
    # one named like an archive column or one of the fields above is left out
    row.update({k: v for k, v in q.meta.items() if k not in row and k not in PROBLEM_COLUMNS})
    solutions = [{"problem_key": key, **completion_fields(c), "answer": ans, "agrees": r > 0, "reward": r}
                 for c, ans, r in zip(group, verdicts.answers, rewards)]
    samples = [to_sample(c, r, group_id, scale=cfg.reward_scale()) for c, r in zip(group, rewards)]
    return row, solutions, samples, verdicts.audit


def _metrics(problems: list[dict], samples: list, audits: list[bool], solved: list, solver_tps: float) -> dict[str, Any]:
    """The round's step metrics (merged over rounds as METRICS says)."""
    rates = [p["solve_rate"] for p in problems]
    return {
        "questions": len(problems),
        "student_reward_mean": mean_or_none([s.reward for s in samples]),
        "solve_rate_mean": mean_or_none(rates),
        "solved_any_rate": mean_or_none([1.0 if r > 0 else 0.0 for r in rates]),
        "solver_groups_with_signal": sum(1 for r in rates if 0 < r < 1),
        "label_precision": mean_or_none([1.0 if a else 0.0 for a in audits]),
        "label_audited": len(audits),
        "solution_tokens_mean": mean_or_none([float(len(c.token_ids)) for g in solved for c in g]),
        "student_tokens_per_s": solver_tps,
    }
