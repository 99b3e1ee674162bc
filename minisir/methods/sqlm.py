"""SQLM, Self-Questioning Language Models (arXiv 2508.03682): its config and its step.

The proposer gets only a topic and writes a problem; the solver answers it N times.
- Math topics (arithmetic, algebra): a solver sample earns 1 when its \\boxed answer is in
  the majority class; the proposer earns 1 when the majority size m lies strictly inside
  (band_low, band_high), by default 1 < m < N: neither unanimous (too easy) nor all
  different (too hard / ill-posed).
- Coding: the proposer also writes >= min_tests stdin/stdout tests. A solver sample earns
  its pass rate (programs run in minisir.sandbox); the proposer earns 1 when the mean pass
  rate is strictly inside (pass_low, pass_high), by default (0, 1).
Invalid proposals earn 0, keep their reason, and never produce solver groups.

This module owns the method's config and step: `play` runs one round on the runner's sampler,
as named stages (propose, parse, label, solve, stretch, score, rows). Prompts and parsing live in
sqlm_prompts.py, rewards and groups (pure functions) in sqlm_rewards.py, the coding topic's
sandboxed scoring in sqlm_coding.py. Defaults follow the reference (lili-chen/self-questioning-lm): 4 proposals per
prompt form one proposer group, solvers N = 4, proposer every 5th step. minisir adds: no
solver training without a clear majority, and no reward for a problem whose majority
answer is a number from its own text.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..labels import (LABELS_DESCRIPTION, STATED_NUMBERS_DESCRIPTION, VERIFIER_DESCRIPTION, Executed, LabelMode,
                      bare_expression, bind_verifier, execute, judge, verifier_spec)
from ..sandbox import SandboxConfig
from .common import METRICS as COMMON_METRICS
from .common import (SamplingConfig, completion_fields, max_tokens_field, mean_or_none, own_temperature_field,
                     own_top_p_field, sampled_by, temperature_field, to_sample, top_p_field)
from .sqlm_coding import score_code_batch
from .sqlm_prompts import eval_prompt, eval_stop  # noqa: F401  the method interface (loop, evaluate)
from .sqlm_prompts import (TOPICS, Proposal, example_parts, parse_proposal, proposer_prompt, proposer_stop,
                           solver_prompt, solver_stop)
from .sqlm_rewards import GroupPlan, no_label_reason, plan_groups, proposer_payment, refusal, score_math

if TYPE_CHECKING:
    from .common import Context, Phase, ProblemStore, StepResult


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
    curriculum_rank: Literal["operations", "digits"] = Field("operations", description=(
        "what 'hardest' means for curriculum_examples and stretch problems (difficulty.computation): "
        "operations = more operations first, then bigger operands; digits = bigger operands first, then more "
        "operations. On the bundled model, ranking by operations climbed to long chains of one-digit numbers "
        "while its two-digit sums stayed weak (RESULTS.md, seventh sitting); ranked by digits from the same step "
        "29 (one seed), it wrote and solved more two-digit chains, and arithmetic-medium's two-operation "
        "questions still did not move (eighth sitting)"))
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


def curriculum_pool(problems: "ProblemStore", step: int, cfg: SQLMConfig, program: bool) -> list[dict]:
    """The hardest problems of the last curriculum_window steps that earned the proposer the band
    reward: what its solvers could just solve. A stretch problem's reward is for reach, and a pool
    of them led the proposer past its solvers (RESULTS.md, third sitting): it is left out.

    Hardest by the computation that labels them (difficulty.computation, ordered as
    method.curriculum_rank says), never by their wording, which nothing verifies. With program labels only problems
    with a program (or bare expressions, which are their own) qualify, so every example still shows
    how its answer is computed.
    """
    from ..difficulty import computation

    if not cfg.curriculum_examples:
        return []
    pool = []
    for row in problems.rewarded_since(step - cfg.curriculum_window):
        if row["stretch"]:  # paid for reach (a right answer in 32), not solved inside the band
            continue
        shot = {"problem": row["text"], "program": row["program"]} if row["program"] else row["text"]
        if program and example_parts(shot)[1] is None:
            continue
        pool.append((ranked(computation(row["text"], row["program"]), cfg.curriculum_rank), row["step"], shot))
    pool.sort(key=lambda x: (x[0], x[1]), reverse=True)  # hardest first; among equals, the newest
    return [shot for _, _, shot in pool[: cfg.curriculum_pool]]


def ranked(work: tuple[int, int], rank: str) -> tuple[int, int]:
    """difficulty.computation's (operations, operand digits) as the sort key method.curriculum_rank names."""
    operations, digits = work
    return (digits, operations) if rank == "digits" else (operations, digits)


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
    hardness = {i: ranked(computation(problems[i].problem, programs[i]), cfg.curriculum_rank) for i in solved}
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
    from .common import StepResult, step_seed

    r = _Round(runner, step, round_)
    with phase("proposer"):
        _propose(r)
    with phase("parse"):
        _parse(r)
    with phase("execute"):
        _label(r)
    with phase("solver"):
        _solve(r)
    if r.cfg.stretch_samples and r.solve:
        with phase("stretch"):
            r.stretched = _sample_stretch(r.runner, r.cfg, {i: r.parsed[i] for i in r.solve},
                                          {i: r.executed[i].answer for i in r.solve}, r.groups_of,
                                          step_seed(r.seed, step, "stretch", round_))
    with phase("rewards"):
        _score(r)
    problems, solutions, samples = _rows(r)
    return StepResult(problems, solutions, samples, _metrics(r, problems))


class _Round:
    """What one round has made so far, stage by stage (indices are proposal positions)."""

    def __init__(self, runner: "Context", step: int, round_: int) -> None:
        self.runner, self.step, self.round = runner, step, round_
        self.cfg: SQLMConfig = runner.method
        self.seed = runner.seed
        self.kind = self.cfg.kind()
        self.chat = runner.chat is not None
        self.prefix = f"{step}" if round_ == 0 else f"{step}r{round_}"
        self.labelled = self.kind == "number" and self.cfg.labels != "majority"
        self.pool: list = []
        self.proposed: list = []  # proposer completions
        self.prompt_of: list[int] = []  # each proposal's prompt (its proposer group)
        self.parsed: list[Proposal] = []
        self.valid: list[int] = []
        self.executed: dict[int, Executed] = {}  # the independent answer (the label, or the audit's reference)
        self.refused: dict[int, str | None] = {}
        self.solve: list[int] = []  # proposals the solvers answer
        self.groups_of: dict[int, list] = {}  # proposal -> its solver completions
        self.stretched: list[int] = []
        self.scores: dict[int, Any] = {}  # proposal -> MathScore | CodeScore
        self.no_label: dict[int, str] = {}
        self.invalid: dict[int, str] = {}
        self.plan: GroupPlan | None = None
        self.proposer_tps = self.solver_tps = 0.0


def _propose(r: _Round) -> None:
    """Sample the round's proposals: proposals_per_prompt from each few-shot prompt."""
    from .common import step_seed, tokens_per_s

    cfg, t = r.cfg, time.perf_counter()
    prop_seed = step_seed(r.seed, r.step, "proposer", r.round)
    r.pool = curriculum_pool(r.runner.problems, r.step, cfg, r.labelled) if r.kind == "number" else []
    prompts = [proposer_prompt(cfg.topic, r.runner.chat, seed=prop_seed + k, min_tests=cfg.min_tests, kind=r.kind,
                               examples=cfg.topic_examples, program=r.labelled,
                               frontier=pick_frontier(r.pool, cfg.curriculum_examples, prop_seed + k))
               for k in range(cfg.proposals_per_step // cfg.proposals_per_prompt)]
    groups = r.runner.sampler.generate(
        prompts, n=cfg.proposals_per_prompt, **cfg.proposer_sampling().kwargs(), seed=prop_seed,
        stop=proposer_stop(cfg.topic, r.chat, r.kind, r.labelled))
    r.proposed = [c for g in groups for c in g]
    r.prompt_of = [k for k, g in enumerate(groups) for _ in g]
    r.proposer_tps = tokens_per_s(groups, time.perf_counter() - t)


def _parse(r: _Round) -> None:
    """Each proposal as a problem (and program, or tests), or the reason it is not one."""
    cfg = r.cfg
    r.parsed = [parse_proposal(c.text, cfg.topic, c.finish_reason, cfg.min_tests, cfg.max_tests, r.kind,
                               cfg.topic_examples) for c in r.proposed]
    r.valid = [i for i, p in enumerate(r.parsed) if p.valid]


def _label(r: _Round) -> None:
    """Number answers: run each valid problem's program (or expression); refuse what has no usable label."""
    if r.kind != "number":
        r.solve = list(r.valid)
        return
    cfg = r.cfg
    r.executed = dict(zip(r.valid, execute([r.parsed[i].problem for i in r.valid],
                                           [r.parsed[i].program if r.labelled else None for i in r.valid],
                                           cfg.sandbox, whole_output=cfg.verifier is not None,
                                           stated_only=cfg.stated_numbers_only)))
    r.refused = {i: refusal(r.parsed[i].problem, r.executed[i], cfg) for i in r.valid if r.labelled}
    r.solve = [i for i in r.valid if not r.refused.get(i)]


def _solve(r: _Round) -> None:
    """solver_samples answers to every problem that goes on."""
    from .common import step_seed, tokens_per_s

    if not r.solve:
        return
    cfg, t = r.cfg, time.perf_counter()
    solved = r.runner.sampler.generate(
        [solver_prompt(r.parsed[i].problem, cfg.topic, r.runner.chat, r.kind) for i in r.solve],
        n=cfg.solver_samples, **cfg.solver_sampling().kwargs(), seed=step_seed(r.seed, r.step, "solver", r.round),
        stop=solver_stop(cfg.topic, r.chat, r.kind))
    r.groups_of = dict(zip(r.solve, solved))
    r.solver_tps = tokens_per_s(solved, time.perf_counter() - t)


def _score(r: _Round) -> None:
    """Solver and proposer rewards, why a problem has no label, and the round's GRPO groups."""
    cfg = r.cfg
    texts = {i: [c.text for c in r.groups_of[i]] for i in r.solve}
    if r.kind == "program":
        r.scores = dict(zip(r.solve, score_code_batch([(texts[i], r.parsed[i].tests) for i in r.solve], cfg)))
    else:
        r.scores = {i: score_math(texts[i], cfg, r.executed[i].answer, r.parsed[i].problem) for i in r.solve}
        for i in r.stretched:
            r.scores[i].proposer_reward = stretch_reward(r.scores[i].majority_size)
    r.invalid = {i: why for i, why in r.refused.items() if why}
    for i, score in r.scores.items():
        if r.kind == "number" and (why := no_label_reason(r.parsed[i].problem, score, cfg)):
            r.no_label[i] = why
            if why.startswith("leak"):
                r.invalid[i] = why
    proposer_rewards = [proposer_payment(r.scores.get(i), r.invalid.get(i), r.no_label.get(i), cfg)
                        for i in range(len(r.parsed))]
    solver_rewards = [r.scores[i].solver_rewards if i in r.scores else None for i in range(len(r.parsed))]
    r.plan = plan_groups(r.prefix, cfg.topic, r.parsed, proposer_rewards, solver_rewards, cfg, r.prompt_of,
                         {**r.no_label, **r.invalid}, r.runner.min_reward_std)


def _rows(r: _Round) -> tuple[list[dict], list[dict], list]:
    """The archive's problem and solution rows, and the trainer's samples."""
    problems, solutions, samples = [], [], []
    for i, (c, p) in enumerate(zip(r.proposed, r.parsed)):
        key = f"{r.prefix}-{i}"
        problems.append(_problem_row(r, i, c, p, key))
        if i not in r.scores:
            continue
        score, group = r.scores[i], r.groups_of[i]
        answers = score.answers if r.kind != "program" else [None] * len(group)
        agrees = [x > 0 for x in score.solver_rewards] if r.kind != "program" else [None] * len(group)
        for c2, ans, ag, rew in zip(group, answers, agrees, score.solver_rewards):
            solutions.append({"problem_key": key, **completion_fields(c2), "answer": ans, "agrees": ag, "reward": rew})
        if i in r.plan.solver_groups:
            samples += [to_sample(c2, rew, r.plan.solver_groups[i]) for c2, rew in zip(group, score.solver_rewards)]
    samples += [to_sample(r.proposed[i], r.plan.proposer_rewards[i], gid) for i, gid in r.plan.proposer_groups.items()]
    return problems, solutions, samples


def _problem_row(r: _Round, i: int, c: Any, p: Proposal, key: str) -> dict[str, Any]:
    """One proposal's archive row: the problem, why it is invalid, its label, vote and solve rate."""
    reason = p.reason or r.invalid.get(i)
    row: dict[str, Any] = {"key": key, "text": p.problem, "role": "proposer", "method": "sqlm",
                           "valid": p.valid and reason is None, "invalid_reason": reason, "raw": c.text,
                           "topic": r.cfg.topic, "teacher_reward": r.plan.proposer_rewards[i],
                           "n_tokens": len(c.token_ids), "finish_reason": c.finish_reason,
                           "prompt_index": r.prompt_of[i], **sampled_by(c)}
    if p.tests:
        row["tests"] = [[t.stdin, t.expected_stdout] for t in p.tests]
    if p.program is not None:
        row["program"] = p.program
    if i in r.executed:
        ex = r.executed[i]
        row.update({"executed_answer": ex.answer, "executed_source": ex.source, "execute_error": ex.reason})
    if i not in r.scores:
        return row
    score, n = r.scores[i], len(r.groups_of[i])
    if r.kind == "program":
        row.update({"solve_rate": float(np.mean(score.pass_rates)), "n_samples": n})
        return row
    row.update({"majority_answer": score.majority_answer, "n_samples": n, "solve_rate": score.majority_size / n,
                "majority_size": score.majority_size, "label": score.label,
                "label_source": "majority" if r.cfg.labels == "majority" else "executed"})
    if i in r.stretched:
        row["stretch"] = True
    if score.audit is not None:
        row["majority_correct"] = score.audit
    return row


def _metrics(r: _Round, problems: list[dict]) -> dict[str, Any]:
    """The round's step metrics (merged over rounds as METRICS says)."""
    parsed, valid, solve, cfg = r.parsed, r.valid, r.solve, r.cfg
    audits = [s.audit for s in r.scores.values() if getattr(s, "audit", None) is not None]
    scores = list(r.scores.values())
    return {
        "topic": cfg.topic,
        "proposals": len(parsed),
        "valid_rate": len(valid) / len(parsed) if parsed else 0.0,
        "labelled_rate": (sum(1 for i in valid if r.executed[i].answer is not None) / len(parsed)
                          if parsed and r.kind == "number" else None),
        "leak_rate": sum(1 for why in r.invalid.values() if why.startswith("leak")) / len(parsed) if parsed else 0.0,
        "no_majority_rate": (sum(1 for why in r.no_label.values() if why == "no clear majority") / len(solve)
                             if solve else 0.0),
        "label_precision": mean_or_none([1.0 if a else 0.0 for a in audits]),
        "label_audited": len(audits),
        "teacher_reward_mean": mean_or_none(r.plan.proposer_rewards),
        "student_reward_mean": mean_or_none([x for s in scores for x in s.solver_rewards]),
        "solve_rate_mean": mean_or_none([row["solve_rate"] for row in problems if row.get("solve_rate") is not None]),
        "solution_tokens_mean": mean_or_none([float(len(c.token_ids)) for g in r.groups_of.values() for c in g]),
        "proposer_groups_trained": len(set(r.plan.proposer_groups.values())),
        "solver_groups_trained": len(r.plan.solver_groups),
        "curriculum_pool": len(r.pool),
        "stretch_problems": len(r.stretched) if cfg.stretch_samples else None,
        "stretch_solved": sum(1 for i in r.stretched if r.scores[i].majority_size > 0) if cfg.stretch_samples else None,
        "teacher_tokens_per_s": r.proposer_tps,
        "student_tokens_per_s": r.solver_tps,
    }
