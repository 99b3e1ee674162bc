"""SQLM's rewards and groups (arXiv 2508.03682; reference: lili-chen/self-questioning-lm): the
proposer's band reward on the majority size, the solvers' reward for matching the label, why a
problem earns nothing or trains no solvers, and which GRPO groups a round trains. Pure functions:
tested without a model; `sqlm.py` owns the step that uses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from ..grpo import has_signal
from ..labels import bind_verifier, judge

if TYPE_CHECKING:
    from ..labels import Executed
    from .sqlm import SQLMConfig
    from .sqlm_coding import CodeScore
    from .sqlm_prompts import Proposal


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
