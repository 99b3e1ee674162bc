"""SQLM, Self-Questioning Language Models (arXiv 2508.03682): config, rewards, groups and the step.

The proposer gets only a topic and writes a problem; the solver answers it N times.
- Math topics (arithmetic, algebra): a solver sample earns 1 when its \\boxed answer is in
  the majority class; the proposer earns 1 when the majority size m lies strictly inside
  (band_low, band_high), by default 1 < m < N: neither unanimous (too easy) nor all
  different (too hard / ill-posed).
- Coding: the proposer also writes >= min_tests stdin/stdout tests. A solver sample earns
  its pass rate (programs run in minisir.sandbox); the proposer earns 1 when the mean pass
  rate is strictly inside (pass_low, pass_high), by default (0, 1).
Invalid proposals earn 0, keep their reason, and never produce solver groups.

This module owns the method's whole step: rewards and groups are pure functions; `play` runs
one round on the runner's sampler. Prompts and parsing live in sqlm_prompts.py, the coding
topic's sandboxed scoring in sqlm_coding.py. Defaults follow the reference (lili-chen/self-questioning-lm): 4 proposals per
prompt form one proposer group, solvers N = 4, proposer every 5th step. minisir adds: no
solver training without a clear majority, and no reward for a problem whose majority
answer is a number from its own text.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..grpo import has_signal
from ..labels import (LABELS_DESCRIPTION, STATED_NUMBERS_DESCRIPTION, VERIFIER_DESCRIPTION, Executed, LabelMode,
                      bare_expression, bind_verifier, execute, judge, verifier_spec)
from ..sandbox import SandboxConfig
from .sqlm_coding import CodeScore, score_code_batch
from .sqlm_prompts import eval_prompt, eval_stop  # noqa: F401  the method interface (loop, evaluate)
from .sqlm_prompts import (TOPICS, Proposal, example_parts, parse_proposal, proposer_prompt, proposer_stop,
                           solver_prompt, solver_stop)
from .common import METRICS as COMMON_METRICS
from .common import (SamplingConfig, completion_fields, max_tokens_field,
                     mean_or_none, own_temperature_field, own_top_p_field, sampled_by, temperature_field, to_sample,
                     top_p_field)

if TYPE_CHECKING:
    from .common import Context, Phase, StepResult


class SQLMConfig(BaseModel):
    """method: section of a recipe for SQLM."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["sqlm"] = "sqlm"
    topic: str = Field("arithmetic", min_length=1, max_length=2000, description=(
        "arithmetic | algebra | coding, or your own topic in plain words (then set answer_kind and, for "
        "base models, topic_examples)"))
    answer_kind: Literal["number", "program"] | None = Field(
        None, description="what a problem's answer is; null = the built-in topic's (coding: program, else number)")
    topic_examples: list[str | dict[str, str]] = Field(default_factory=list, max_length=32, description=(
        "example problems shown to the proposer for your own topic (few-shot prompts need them): a problem, or "
        "{problem, program} where program prints its answer (labels: program/agree need one unless the problem "
        "is a bare expression); built-in topics have their own"))
    labels: LabelMode = Field("majority", description=LABELS_DESCRIPTION)
    verifier: str | None = Field(None, description=VERIFIER_DESCRIPTION + " (labels: program or agree)")
    stated_numbers_only: bool = Field(True, description=STATED_NUMBERS_DESCRIPTION)
    proposals_per_step: int = Field(8, ge=1, le=1024, description="proposals per round, all prompts together")
    proposals_per_prompt: int = Field(4, ge=1, le=64, description=(
        "proposals sampled from one prompt: one proposer GRPO group, advantages taken inside it (reference 4)"))
    solver_samples: int = Field(4, ge=2, le=64, description="N answers per problem")
    band_low: int = Field(1, ge=0, description="proposer reward needs band_low < m (majority size)")
    band_high: int | None = Field(None, ge=1, description="... and m < band_high; None = solver_samples")
    require_majority: bool = Field(True, description=(
        "train a solver group only when its majority has >= 2 votes and no tie for first place "
        "(four different answers are no label)"))
    leak_filter: bool = Field(True, description=(
        "number answers: a problem whose majority answer is a number from its own text earns the proposer 0 "
        "and trains no solvers"))
    pass_low: float = Field(0.0, ge=0, le=1, description="coding: proposer reward needs pass_low < mean pass rate")
    pass_high: float = Field(1.0, ge=0, le=1, description="... and mean pass rate < pass_high")
    proposer_update_every: int = Field(5, ge=1, le=100_000, description="train the proposer every k-th step")
    curriculum_examples: int = Field(0, ge=0, le=3, description=(
        "of the proposer's 3 few-shot examples, how many are this run's own recent problems that earned the "
        "proposer a reward (solved inside the band), drawn from the hardest (minisir/difficulty.py): as the "
        "solvers improve, harder problems land in the band and the proposer sees them; 0 = topic examples only"))
    curriculum_window: int = Field(10, ge=1, le=100_000, description=(
        "curriculum_examples come from the problems of the last this many steps"))
    curriculum_pool: int = Field(8, ge=1, le=1024, description=(
        "curriculum_examples are drawn at random from this many of the hardest rewarded problems"))
    stretch_samples: int = Field(0, ge=0, le=256, description=(
        "labels program: extra solver samples for a stretch problem, one harder than most of its round "
        "(difficulty.computation above the round's median) that none of its first solver_samples solved. With "
        "any extra sample right it pays the proposer (just outside the band, where the band alone never pays "
        "for what the solvers cannot yet do) and trains its solvers on the whole group; 0 = off"))
    stretch_max: int = Field(2, ge=1, le=64, description=(
        "stretch problems sampled again per round at most, the hardest first (bounds the extra sampling)"))
    temperature: float = temperature_field(1.0, "the proposer (and solvers)")
    top_p: float = top_p_field(1.0, "the proposer (and solvers)")
    solver_temperature: float | None = own_temperature_field("solvers")
    solver_top_p: float | None = own_top_p_field("solvers")
    proposer_max_tokens: int = max_tokens_field(384, "proposal", le=8192)
    solver_max_tokens: int = max_tokens_field(512, "solution", le=8192)
    min_tests: int = Field(5, ge=1, le=100, description="coding: fewest distinct tests a proposal must have")
    max_tests: int = Field(20, ge=1, le=500, description="coding: tests beyond this are dropped (cost bound)")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    @field_validator("topic_examples")
    @classmethod
    def _example_shape(cls, value: list) -> list:
        for i, ex in enumerate(value):
            if isinstance(ex, dict) and (set(ex) - {"problem", "program"} or not str(ex.get("problem", "")).strip()):
                raise ValueError(f"topic_examples[{i}]: give a problem string or {{problem, program}}")
        return value

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
        if self.proposals_per_step % self.proposals_per_prompt:
            raise ValueError(f"proposals_per_step ({self.proposals_per_step}) must be a multiple of "
                             f"proposals_per_prompt ({self.proposals_per_prompt})")
        if self.topic not in TOPICS and self.answer_kind is None:
            raise ValueError(f"topic {self.topic[:40]!r} is your own: set answer_kind to number or program")
        verifier_spec(self.verifier)
        if self.verifier and self.labels == "majority":
            raise ValueError("verifier needs labels: program or agree (it compares answers with what the "
                             "proposer's program printed; a vote has no program)")
        if self.stretch_samples and self.labels != "program":
            raise ValueError(f"stretch_samples needs labels: program (an executed label says which rare answer "
                             f"is right; a vote of mostly wrong answers cannot), not labels: {self.labels}")
        if self.labels != "majority":
            if self.kind() == "program":
                raise ValueError(f"labels: {self.labels} is for number answers; coding is labelled by its tests")
            for i, ex in enumerate(self.topic_examples):
                problem, program = example_parts(ex)
                if program is None and bare_expression(problem) is None:
                    raise ValueError(f"topic_examples[{i}] needs a program (labels: {self.labels}): write it as "
                                     "{problem: ..., program: print(...)}")
        return self

    def band(self) -> tuple[int, int]:
        """(low, high) with the open-interval meaning low < m < high."""
        return self.band_low, self.solver_samples if self.band_high is None else self.band_high

    def kind(self) -> str:
        """number or program: what scores a solution (majority vote, or the proposer's tests)."""
        return self.answer_kind or ("program" if self.topic == "coding" else "number")

    def proposer_sampling(self) -> SamplingConfig:
        return SamplingConfig.of(self.temperature, self.top_p, self.proposer_max_tokens)

    def solver_sampling(self) -> SamplingConfig:
        return SamplingConfig.of(self.temperature, self.top_p, self.solver_max_tokens, self.solver_temperature,
                                 self.solver_top_p)


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


@dataclass
class MathScore:
    answers: list[str | None]
    majority_answer: str | None  # the vote's answer (None when nothing parsed)
    majority_size: int  # m: members of the majority class, or (executed labels) solvers that got the label
    solver_rewards: list[float]
    proposer_reward: float
    label: str | None = None  # what solvers were rewarded for matching
    tie: bool = False  # the vote's first place is shared
    vote_answer: str | None = None  # the vote's answer whatever the label
    audit: bool | None = None  # the vote against the executed answer (labels.judge); None without one


def score_math(solutions: Sequence[str], cfg: SQLMConfig, truth: str | None = None,
               problem: str = "") -> MathScore:
    """Votes and rewards for the N solutions of one math problem.

    labels majority: solvers earn 1 for the majority class and m is its size. labels
    program: `truth` (the executed answer) is the label; solvers earn 1 for matching it and
    m counts them. labels agree: the majority is the label, and only when it equals `truth`
    (else no_label_reason refuses it).
    """
    verdicts = judge(solutions, truth, bind_verifier(cfg.verifier, problem, truth))
    vote = verdicts.vote
    low, high = cfg.band()
    if cfg.labels == "program":
        m, label = verdicts.right, truth
        rewards = [1.0 if c else 0.0 for c in verdicts.correct]
    else:
        m, rewards, label = vote.count, math_solver_rewards(vote.agrees), vote.answer
    return MathScore(
        answers=verdicts.answers,
        majority_answer=vote.answer,
        majority_size=m,
        solver_rewards=rewards,
        proposer_reward=math_proposer_reward(m, low, high),
        label=label,
        tie=vote.tie,
        vote_answer=vote.answer,
        audit=verdicts.audit,
    )


def refusal(problem: str, executed: "Executed", cfg: SQLMConfig) -> str | None:
    """Why a labelled proposal (labels program/agree) earns 0 before any solver runs; None when it goes on.

    No executed answer (the program failed, timed out, printed nothing) or an executed
    answer that appears in the problem's own text (a leak) is refused, with the reason kept.
    """
    from .common import answer_leak_reason

    if executed.answer is None:
        return f"no label: {executed.reason}"
    if cfg.leak_filter and (leak := answer_leak_reason(problem, executed.answer, 0, cfg.verifier is None)):
        return f"leak: {leak}"
    return None


def no_label_reason(problem: str, score: MathScore, cfg: SQLMConfig) -> str | None:
    """Why a solved math problem trains no solvers (and, with require_majority, pays its proposer 0).

    majority/agree: the majority answer is copied from the problem (a leak), or there is no
    clear majority (fewer than 2 votes, or a tie: ["5", "5", "6", "6"] is a coin flip, not a
    label). agree: also when the majority differs from the executed answer (the score's audit).
    """
    from .common import answer_leak_reason, has_clear_majority

    if cfg.labels == "program":
        return None  # the executed label was checked before solving (refusal)
    leak = answer_leak_reason(problem, score.majority_answer, 0, cfg.verifier is None) if cfg.leak_filter else None
    if leak and score.majority_answer is not None:
        return f"leak: {leak}"
    if cfg.require_majority and not has_clear_majority(score.answers):
        return "no clear majority"
    if cfg.labels == "agree" and not score.audit:
        return "majority differs from the executed answer"
    return None


def proposer_payment(score: "MathScore | CodeScore | None", refused: str | None, no_label: str | None,
                     cfg: SQLMConfig) -> float:
    """What the proposer earns for one problem.

    0 when it was refused (no executed label, a leak) or never solved; 0 when its solvers
    have no label to train on and require_majority is on (no clear majority: a tie such
    as ["5", "5", "6", "6"] pays nothing) or labels is agree (the vote and the program
    disagree); else the band reward.
    """
    if score is None or refused:
        return 0.0
    if no_label and (no_label.startswith("leak") or cfg.require_majority or cfg.labels == "agree"):
        return 0.0
    return float(score.proposer_reward)


# --------------------------------------------------------------------------- groups
def proposer_updates(step: int, every: int) -> bool:
    """Whether the proposer trains at `step` (0-based): every k-th step, k = every."""
    return (step + 1) % every == 0


@dataclass
class GroupPlan:
    """Which GRPO groups a step trains; the loop turns them into trainer Samples.

    proposer_group: the first proposer group id (None with proposer_skip saying why);
        proposer_groups maps every trained proposal (invalid ones with reward 0, which
        teaches the format) to its prompt's group.
    solver_groups: proposal index -> group id, one group per valid problem (its N samples).
    skipped: proposal index -> why it has no solver group ("invalid: ...", "all rewards equal").
    """

    proposer_group: str | None
    proposer_rewards: list[float]
    proposer_skip: str | None = None
    proposer_groups: dict[int, str] = field(default_factory=dict)  # proposal index -> its prompt's group
    solver_groups: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


def plan_groups(
    step: int | str,
    topic: str,
    proposals: Sequence[Proposal],
    proposer_rewards: Sequence[float],
    solver_rewards: Sequence[Sequence[float] | None],
    cfg: SQLMConfig,
    prompt_of: Sequence[int] | None = None,
    no_label: dict[int, str] | None = None,
    min_reward_std: float = 0.0,
) -> GroupPlan:
    """Group one round's samples (analogue of opensir.select_groups).

    prompt_of: the prompt index of each proposal. Proposals of one prompt form one
        proposer group (reference: 4 proposals per prompt, advantage inside the group);
        None puts all proposals in one group.
    no_label: proposal index -> why its solvers have no trustworthy label (no clear
        majority, the answer leaks from the problem): such problems train no solvers.
    Groups whose rewards do not spread (grpo.has_signal with the trainer's min_reward_std;
    rewards here are 0/1 or a pass rate, so their scale is 1) are skipped. Invalid
    proposals always get proposer reward 0 and never a solver group, whatever the caller
    passed for them.
    """
    if not (len(proposals) == len(proposer_rewards) == len(solver_rewards)):
        raise ValueError("proposals, proposer_rewards and solver_rewards must have the same length")
    rewards = [float(r) if p.valid else 0.0 for p, r in zip(proposals, proposer_rewards)]
    plan = GroupPlan(proposer_group=None, proposer_rewards=rewards)
    prompt_of = list(prompt_of) if prompt_of is not None else [0] * len(proposals)
    by_prompt: dict[int, list[int]] = {}
    for i, k in enumerate(prompt_of):
        by_prompt.setdefault(k, []).append(i)
    step_no = int(str(step).split("r")[0])
    if not proposer_updates(step_no, cfg.proposer_update_every):
        plan.proposer_skip = f"proposer trains every {cfg.proposer_update_every} steps"
    else:
        for k, members in by_prompt.items():
            if has_signal([rewards[i] for i in members], min_reward_std):
                gid = f"sqlm:{step}:proposer:{k}"
                plan.proposer_groups.update({i: gid for i in members})
        if plan.proposer_groups:
            plan.proposer_group = next(iter(plan.proposer_groups.values()))
        else:
            plan.proposer_skip = "all proposer rewards equal within every prompt's group"
    no_label = no_label or {}
    for i, (p, sr) in enumerate(zip(proposals, solver_rewards)):
        if not p.valid:
            plan.skipped[i] = f"invalid: {p.reason}"
        elif not sr:
            plan.skipped[i] = "no solver samples"
        elif i in no_label:
            plan.skipped[i] = no_label[i]
        elif not has_signal([float(x) for x in sr], min_reward_std):
            plan.skipped[i] = "all solver rewards equal"
        else:
            plan.solver_groups[i] = f"sqlm:{step}:solver:{i}"
    return plan


def curriculum_pool(archive: Any, step: int, cfg: SQLMConfig, program: bool) -> list[dict]:
    """The hardest problems of the last curriculum_window steps that earned the proposer the band
    reward: what its solvers could just solve. A stretch problem's reward is for reach, and a pool
    of them led the proposer past its solvers (RESULTS.md, third sitting): it is left out.

    Hardest by the computation that labels them (difficulty.computation: operations, then operand
    digits), never by their wording, which nothing verifies. With program labels only problems
    with a program (or bare expressions, which are their own) qualify, so every example still shows
    how its answer is computed.
    """
    from ..difficulty import computation

    if not cfg.curriculum_examples:
        return []
    pool = []
    for row in archive.rewarded_since(step - cfg.curriculum_window):
        if row["stretch"]:  # paid for reach (a right answer in 32), not solved inside the band
            continue
        shot = {"problem": row["text"], "program": row["program"]} if row["program"] else row["text"]
        if program and example_parts(shot)[1] is None:
            continue
        pool.append((computation(row["text"], row["program"]), row["step"], shot))
    pool.sort(key=lambda x: (x[0], x[1]), reverse=True)  # hardest first; among equals, the newest
    return [shot for _, _, shot in pool[: cfg.curriculum_pool]]


def pick_frontier(pool: list, k: int, seed: int) -> list:
    """k examples from the curriculum pool for one prompt (fewer while the pool is small)."""
    return random.Random(seed).sample(pool, min(k, len(pool)))


def stretch_picks(hardness: dict[int, tuple[int, int]], solved: dict[int, int], k: int) -> list[int]:
    """The round's stretch problems: none of the first samples solved them, and they take more
    computation than the round's median labelled problem; hardest first, at most k.

    hardness: problem index -> difficulty.computation for every labelled problem of the round;
    solved: index -> how many first samples matched the label. Why the median: "harder" must move
    with the proposer (a fixed "two operations" stops meaning hard once most problems take two),
    and it must never pick from the easy half, whose misses are mostly slips, not reach.
    """
    if not hardness:
        return []
    ranked = sorted(hardness.values())
    median = ranked[(len(ranked) - 1) // 2]
    picks = [i for i, h in hardness.items() if h > median and solved.get(i, 0) == 0]
    return sorted(picks, key=lambda i: (hardness[i], -i), reverse=True)[:k]


def stretch_reward(m: int) -> float:
    """A stretch problem pays its proposer 1 when any of its samples matched the label: then its
    solvers have a right answer to learn from, which is what a problem is worth."""
    return 1.0 if m > 0 else 0.0


def _sample_stretch(runner: "Context", cfg: SQLMConfig, problems: dict[int, str], labels: dict[int, str | None],
                    solved: dict[int, list], seed: int) -> list[int]:
    """Sample stretch_samples more answers for the round's stretch problems, into `solved`; their indices."""
    from ..difficulty import computation

    programs = {i: getattr(p, "program", None) for i, p in problems.items()}
    hardness = {i: computation(problems[i].problem, programs[i]) for i in solved}
    right = {i: judge([c.text for c in group], labels[i], bind_verifier(cfg.verifier, problems[i].problem,
                                                                         labels[i])).right
             for i, group in solved.items()}
    picks = stretch_picks(hardness, right, cfg.stretch_max)
    if picks:
        more = runner.sampler.generate(
            [solver_prompt(problems[i].problem, cfg.topic, runner.chat, cfg.kind()) for i in picks],
            n=cfg.stretch_samples, **cfg.solver_sampling().kwargs(), seed=seed,
            stop=solver_stop(cfg.topic, runner.chat is not None, cfg.kind()))
        for i, group in zip(picks, more):
            solved[i] = list(solved[i]) + list(group)
    return picks


# How this method's step metrics combine over rounds (methods.common.METRICS says how to read it).
METRICS = {**COMMON_METRICS, "proposals": "sum", "proposer_groups_trained": "sum", "solver_groups_trained": "sum",
           "stretch_problems": "sum", "stretch_solved": "sum"}


def play(runner: "Context", step: int, phase: "Phase", round_: int = 0) -> "StepResult":
    """One round: the proposer writes problems on the topic; solvers answer N times (or write code)."""
    from .common import StepResult, step_seed, tokens_per_s

    cfg: SQLMConfig = runner.recipe.method
    seed = runner.recipe.run.seed
    topic, kind, chat = cfg.topic, cfg.kind(), runner.chat is not None
    prefix = f"{step}" if round_ == 0 else f"{step}r{round_}"
    prop_seed = step_seed(seed, step, "proposer", round_)
    n_prompts = cfg.proposals_per_step // cfg.proposals_per_prompt

    labelled = kind == "number" and cfg.labels != "majority"
    with phase("proposer"):
        t = time.perf_counter()
        pool = curriculum_pool(runner.archive, step, cfg, labelled) if kind == "number" else []
        prompts = [proposer_prompt(topic, runner.chat, seed=prop_seed + k, min_tests=cfg.min_tests, kind=kind,
                                   examples=cfg.topic_examples, program=labelled,
                                   frontier=pick_frontier(pool, cfg.curriculum_examples, prop_seed + k))
                   for k in range(n_prompts)]
        groups = runner.sampler.generate(
            prompts, n=cfg.proposals_per_prompt, **cfg.proposer_sampling().kwargs(), seed=prop_seed,
            stop=proposer_stop(topic, chat, kind, labelled))
        proposed = [c for g in groups for c in g]
        prompt_of = [k for k, g in enumerate(groups) for _ in g]
        proposer_tps = tokens_per_s(groups, time.perf_counter() - t)

    with phase("parse"):
        parsed = [parse_proposal(c.text, topic, c.finish_reason, cfg.min_tests, cfg.max_tests, kind,
                                 cfg.topic_examples) for c in proposed]
        valid = [i for i, p in enumerate(parsed) if p.valid]

    with phase("execute"):  # number answers: the independent answer (the label, or the audit's reference)
        executed = dict(zip(valid, execute([parsed[i].problem for i in valid],
                                           [parsed[i].program if labelled else None for i in valid],
                                           cfg.sandbox, whole_output=cfg.verifier is not None,
                                           stated_only=cfg.stated_numbers_only))) if kind == "number" else {}
        refused = {i: refusal(parsed[i].problem, executed[i], cfg) for i in valid if labelled}
        solve = [i for i in valid if not refused.get(i)]

    with phase("solver"):
        t = time.perf_counter()
        solved = runner.sampler.generate(
            [solver_prompt(parsed[i].problem, topic, runner.chat, kind) for i in solve], n=cfg.solver_samples,
            **cfg.solver_sampling().kwargs(), seed=step_seed(seed, step, "solver", round_),
            stop=solver_stop(topic, chat, kind)) if solve else []
        solver_tps = tokens_per_s(solved, time.perf_counter() - t)

    stretched: list[int] = []
    if cfg.stretch_samples and solve:
        with phase("stretch"):
            groups_of = dict(zip(solve, solved))
            stretched = _sample_stretch(runner, cfg, {i: parsed[i] for i in solve},
                                        {i: executed[i].answer for i in solve}, groups_of,
                                        step_seed(seed, step, "stretch", round_))
            solved = [groups_of[i] for i in solve]

    with phase("rewards"):
        texts = [[c.text for c in group] for group in solved]
        if kind == "program":
            scores = score_code_batch([(tx, parsed[i].tests) for tx, i in zip(texts, solve)], cfg)
        else:
            scores = [score_math(tx, cfg, executed[i].answer, parsed[i].problem) for tx, i in zip(texts, solve)]
            for i, score in zip(solve, scores):
                if i in stretched:
                    score.proposer_reward = stretch_reward(score.majority_size)
        by_index = dict(zip(solve, zip(scores, solved)))
        no_label: dict[int, str] = {}
        invalid: dict[int, str] = {i: r for i, r in refused.items() if r}
        for i, (score, _) in by_index.items():
            if kind == "number" and (why := no_label_reason(parsed[i].problem, score, cfg)):
                no_label[i] = why
                if why.startswith("leak"):
                    invalid[i] = why
        proposer_rewards = [proposer_payment(by_index[i][0] if i in by_index else None, invalid.get(i),
                                             no_label.get(i), cfg) for i in range(len(parsed))]
        solver_rewards = [by_index[i][0].solver_rewards if i in by_index else None for i in range(len(parsed))]
        plan = plan_groups(prefix, topic, parsed, proposer_rewards, solver_rewards, cfg, prompt_of,
                           {**no_label, **invalid}, runner.recipe.trainer.min_reward_std)

    problems, solutions, samples = [], [], []
    audits: list[bool] = []
    for i, (c, p) in enumerate(zip(proposed, parsed)):
        key = f"{prefix}-{i}"
        reason = p.reason or invalid.get(i)
        row: dict[str, Any] = {"key": key, "text": p.problem, "role": "proposer", "method": "sqlm",
                               "valid": p.valid and reason is None, "invalid_reason": reason, "raw": c.text,
                               "topic": topic, "teacher_reward": plan.proposer_rewards[i],
                               "n_tokens": len(c.token_ids), "finish_reason": c.finish_reason,
                               "prompt_index": prompt_of[i], **sampled_by(c)}
        if p.tests:
            row["tests"] = [[t.stdin, t.expected_stdout] for t in p.tests]
        if p.program is not None:
            row["program"] = p.program
        if i in executed:
            ex = executed[i]
            row.update({"executed_answer": ex.answer, "executed_source": ex.source, "execute_error": ex.reason})
        if i in by_index:
            score, group = by_index[i]
            if kind == "program":
                row.update({"solve_rate": float(np.mean(score.pass_rates)), "n_samples": len(group)})
                answers, agrees = [None] * len(group), [None] * len(group)
            else:
                row.update({"majority_answer": score.majority_answer, "n_samples": len(group),
                            "solve_rate": score.majority_size / len(group), "majority_size": score.majority_size,
                            "label": score.label, "label_source": "majority" if cfg.labels == "majority" else
                            "executed"})
                if i in stretched:
                    row["stretch"] = True
                answers, agrees = score.answers, [r > 0 for r in score.solver_rewards]
                if (ok := score.audit) is not None:
                    row["majority_correct"] = ok
                    audits.append(ok)
            for c2, ans, ag, rew in zip(group, answers, agrees, score.solver_rewards):
                solutions.append({"problem_key": key, **completion_fields(c2), "answer": ans, "agrees": ag,
                                  "reward": rew})
            if i in plan.solver_groups:
                samples += [to_sample(c2, rew, plan.solver_groups[i]) for c2, rew in zip(group, score.solver_rewards)]
        problems.append(row)
    samples += [to_sample(proposed[i], plan.proposer_rewards[i], gid) for i, gid in plan.proposer_groups.items()]

    metrics = {
        "topic": topic,
        "proposals": len(parsed),
        "valid_rate": len(valid) / len(parsed) if parsed else 0.0,
        "labelled_rate": (sum(1 for i in valid if executed[i].answer is not None) / len(parsed)
                          if parsed and kind == "number" else None),
        "leak_rate": sum(1 for r in invalid.values() if r.startswith("leak")) / len(parsed) if parsed else 0.0,
        "no_majority_rate": sum(1 for r in no_label.values() if r == "no clear majority") / len(solve) if solve else 0.0,
        "label_precision": mean_or_none([1.0 if a else 0.0 for a in audits]),
        "label_audited": len(audits),
        "teacher_reward_mean": mean_or_none(plan.proposer_rewards),
        "student_reward_mean": mean_or_none([r for s in scores for r in s.solver_rewards]),
        "solve_rate_mean": mean_or_none([row["solve_rate"] for row in problems if row.get("solve_rate") is not None]),
        "solution_tokens_mean": mean_or_none([float(len(c.token_ids)) for g in solved for c in g]),
        "proposer_groups_trained": len(set(plan.proposer_groups.values())),
        "solver_groups_trained": len(plan.solver_groups),
        "curriculum_pool": len(pool),
        "stretch_problems": len(stretched) if cfg.stretch_samples else None,
        "stretch_solved": (sum(1 for i in stretched if by_index[i][0].majority_size > 0)
                           if cfg.stretch_samples else None),
        "teacher_tokens_per_s": proposer_tps,
        "student_tokens_per_s": solver_tps,
    }
    return StepResult(problems, solutions, samples, metrics)
