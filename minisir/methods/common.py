"""What every self-play method shares.

- The step contract: a method module (methods/opensir.py, sqlm.py, rlvr.py) owns its whole
  step through `play(ctx, step, phase, round_) -> StepResult`, where ctx is a `Context`
  (the loop's Runner is one: the method's config, seeds, floors, sampler, embedder and the
  committed problems as a `ProblemStore`, never the recipe or the archive) and phase a `Phase`; the loop knows a method only through that
  function, `eval_prompt`/`eval_stop` (held-out evaluation asks questions the way the
  method's students are asked) and its config class (registered in methods.METHODS). No
  method module imports the loop.
- Sampling knobs: the field builders of a config's temperature/top_p/max_tokens fields,
  and `SamplingConfig`, what one role samples with.
- The one math solver prompt: `math_solver_prompt`, `MATH_SOLVER_STOP`.
- Seeds and samples: `step_seed` (per role and round), `to_sample` (a Completion as a
  trainer Sample), `completion_fields`/`sampled_by` (the solution columns), `mean_or_none`
  and `tokens_per_s` for metrics.
- Checks on votes: `has_clear_majority`, `answer_leak_reason` (labels.judge gives the vote).
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from ..answers import equivalent, majority_vote, normalize_answer
from ..prompting import ChatFn, one_line
from ..sampler import UNFINISHED, Completion
from ..grpo import Sample



# --------------------------------------------------------------------------- sampling knobs
# A method's recipe section keeps its sampling keys flat (method.temperature, method.student_top_p,
# ...); these give every such field its bounds and wording in one place, and SamplingConfig is
# what one role samples with.
def temperature_field(default: float, whose: str) -> Any:
    return Field(default, gt=0, le=2.0, description=f"sampling temperature of {whose}")


def top_p_field(default: float, whose: str) -> Any:
    return Field(default, gt=0, le=1.0, description=f"nucleus sampling mass of {whose}")


def own_temperature_field(who: str) -> Any:
    """A second role's own temperature (students, solvers); null = the method's temperature."""
    return Field(None, gt=0, le=2.0, description=(
        f"{who}' own temperature; null = temperature. A weak model's votes at 1.0 are mostly noise"))


def own_top_p_field(who: str) -> Any:
    return Field(None, gt=0, le=1.0, description=f"{who}' own top_p; null = top_p")


def max_tokens_field(default: int, what: str, le: int | None = None) -> Any:
    return Field(default, ge=16, le=le, description=f"token limit of one {what}")


@dataclass(frozen=True)
class SamplingConfig:
    """How one role samples: what sampler.generate takes besides prompts, n, seed and stop."""

    temperature: float
    top_p: float
    max_tokens: int

    @classmethod
    def of(cls, temperature: float, top_p: float, max_tokens: int, own_temperature: float | None = None,
           own_top_p: float | None = None) -> "SamplingConfig":
        """A role's knobs: its own temperature/top_p where set, else the method's shared ones."""
        return cls(own_temperature or temperature, own_top_p or top_p, max_tokens)

    def kwargs(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}

# The one math solver prompt: every method's students and held-out evaluation ask a
# question the same way, so a base-vs-trained comparison measures what training changed.
MATH_SOLVER_INSTRUCTION = "Solve each math problem. Reason step by step, then give the final answer in \\boxed{}."
MATH_SOLVER_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Sara reads 12 pages a day. How many pages does she read in 2 weeks?",
        "Two weeks have 2 * 7 = 14 days. She reads 12 * 14 = 168 pages. The answer is \\boxed{168}.",
    ),
    (
        "A train travels 150 km in 2.5 hours. What is its average speed in km per hour?",
        "Average speed is distance divided by time: 150 / 2.5 = 60 km per hour. The answer is \\boxed{60}.",
    ),
)
# Completion prompts stop where the model starts the next few-shot item.
MATH_SOLVER_STOP: tuple[str, ...] = ("\nProblem:", "\n\n\n")


def math_solver_prompt(problem: str, chat: ChatFn | None = None) -> str:
    """Prompt asking for a worked solution ending in \\boxed{answer}.

    chat=None -> few-shot completion prompt ending in "Solution:" (base models).
    """
    problem = one_line(problem)
    if chat is not None:
        return chat(
            [{"role": "user", "content": f"{problem}\n\nReason step by step and put the final answer in \\boxed{{}}."}]
        )
    parts = [MATH_SOLVER_INSTRUCTION, ""]
    for prob, sol in MATH_SOLVER_EXAMPLES:
        parts += [f"Problem: {prob}", f"Solution: {sol}", ""]
    parts += [f"Problem: {problem}", "Solution:"]
    return "\n".join(parts)


ROLE_IDS = {"reference": 1, "teacher": 2, "student": 3, "proposer": 4, "solver": 5, "stretch": 6}


class ProblemStore(Protocol):
    """The problems a run has committed, as a method reads them (the archive behind it is the loop's)."""

    def count_valid(self) -> int: ...  # valid problems so far

    def valid_at(self, positions: list[int]) -> list[dict]: ...  # valid problems by position, oldest first

    def embedding_matrix(self) -> tuple[np.ndarray, list[int]]: ...  # embedded problems and their ids

    def rewarded_since(self, step: int) -> list[dict]: ...  # problems that paid their proposer since `step`

    def last_step(self) -> int: ...  # the newest committed step, -1 before the first

    def phase_totals(self, phase: str, sums: tuple[str, ...] = ()) -> dict[str, int]: ...


class Context(Protocol):
    """All a method's step may touch: loop.Runner is one, and no method names the loop, the recipe
    or the archive.

    method: the method's own validated config (the recipe's method section); seed, rounds_per_step:
    the run's; min_reward_std: the trainer's zero-signal floor for groups; sampler:
    generate/tokenize/char_offsets; chat: the prompt renderer (None for few-shot completion
    prompts); problems: what the run has committed; embedder: sentence-transformers (loaded on
    first use); cache: per-run values computed once.
    """

    method: Any
    seed: int
    rounds_per_step: int
    min_reward_std: float
    sampler: Any
    chat: ChatFn | None
    problems: ProblemStore
    embedder: Any
    cache: dict[str, Any]


class Phase(Protocol):
    """Times a named phase and honours stop requests (loop._Phases)."""

    def __call__(self, name: str) -> AbstractContextManager[None]: ...


@dataclass
class StepResult:
    """What one round of self-play produced, before training."""

    problems: list[dict]
    solutions: list[dict]
    samples: list[Sample]
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


# How a metric combines over a step's rounds (loop.merge_rounds): "sum" for counts, "mean/<count>"
# for a share of that count (weighted by it: a round that audited nothing must not weigh as much as
# one that audited six); any metric not named is averaged over rounds. A method module's METRICS
# extends these with its own.
METRICS: dict[str, str] = {"label_audited": "sum", "label_precision": "mean/label_audited"}


def step_seed(seed: int, step: int, role: str, round_: int = 0) -> int:
    """A 31-bit seed for one role of one round of one step: resumes replay the same draws.

    Round 0 keeps the seeds of runs made before rounds existed.
    """
    key = [seed, step, ROLE_IDS[role]] + ([round_] if round_ else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0] >> 1)


def completion_fields(c: Completion) -> dict[str, Any]:
    """Solution columns shared by every method."""
    return {"text": c.text, "n_tokens": len(c.token_ids), "finish_reason": c.finish_reason, **sampled_by(c)}


def sampled_by(c: Completion) -> dict[str, Any]:
    """{"rank": r} for a completion sampled by data-parallel rank r (kept in a row's `extra`); {} in one-process runs."""
    return {} if c.rank is None else {"rank": c.rank}


def to_sample(c: Completion, reward: float, group: str, mask: list[int] | None = None, scale: float = 1.0) -> Sample:
    """A trainer sample on the sampler's own token ids and log-probs, scored at its sampling temperature.

    scale: the largest reward the sample's role can earn (the trainer's noise floor is relative to it).
    """
    return Sample(
        prompt_ids=c.prompt_ids,
        completion_ids=c.token_ids,
        sampler_logprobs=c.logprobs,
        reward=float(reward),
        group=group,
        loss_mask=mask,
        truncated=c.finish_reason in UNFINISHED,
        temperature=c.temperature,
        reward_scale=float(scale),
    )


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def tokens_per_s(groups: list[list[Completion]], seconds: float) -> float:
    n = sum(len(c.token_ids) for g in groups for c in g)
    return round(n / seconds, 2) if seconds > 0 else 0.0


def has_clear_majority(answers: list[str | None], min_size: int = 2) -> bool:
    """A pseudo label worth training on: at least `min_size` votes and no tie for first place.

    Four different answers (or a 2-2 split) is no majority: the "label" would be a coin flip.
    """
    v = majority_vote(list(answers))
    if v.count < min_size:
        return False
    runner_up = majority_vote([a for a, agrees in zip(answers, v.agrees) if not agrees]).count
    return v.count > runner_up


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def answer_leak_reason(problem: str, answer: str | None, min_chars: int = 30, numeric: bool = True) -> str | None:
    """Why a problem/majority-answer pair is not a real question (None when it is).

    OpenSIR's initial-pool filter, applied by minisir to the reward during RL too: a
    "problem" whose majority answer is a number copied from its text, has no digit, or is
    a short statement is how a teacher games the solvability reward (students learn to
    copy the number and agree). numeric=False (a method.verifier's answers, which need not be
    numbers): no digit is asked for; an answer copied from the text is still a leak.
    """
    text = one_line(problem)
    if len(text) < min_chars:
        return f"shorter than {min_chars} characters"
    if re.search(r"</?[a-zA-Z]+>", text):
        return "contains a tag"
    if answer is None:
        return "no majority answer"
    if numeric and not re.search(r"\d", answer):
        return "majority answer has no digit"
    numbers = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", text))
    norm = normalize_answer(answer)
    if any(equivalent(answer, n) for n in numbers) or (norm and not _NUMBER.fullmatch(norm) and norm in text):
        return "majority answer appears in the problem"
    return None
