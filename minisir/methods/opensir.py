"""OpenSIR (arXiv 2511.00602): a teacher writes new problems, students vote on answers.

This module owns the method's step and its config: `play` runs one round on the runner's
sampler and archive. Prompts and parsing (`opensir_prompts.py`) and rewards and group choice
(`opensir_rewards.py`) are pure functions, testable without a model. Defaults follow the reference code (EdinburghNLP/OpenSIR):
solvability window [0.5, 0.9] with non-zero edges, length weight 1 and 0 for unparsed
problems, groups ranked by solvability + diversity, and an initial pool grown from the
seed before RL. minisir adds one check the reference applies only to its initial pool:
a problem whose majority answer is copied from its own text earns nothing (`leak_filter`);
and a problem that repeats one its prompt showed is refused before students see it (`refuse_copies`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..grpo import Sample
from ..labels import (LABELS_DESCRIPTION, STATED_NUMBERS_DESCRIPTION, VERIFIER_DESCRIPTION, Executed, LabelMode,
                      bind_verifier, checked_program, execute, judge, verifier_spec)
from ..prompting import ChatFn, one_line
from ..sandbox import SandboxConfig
from .common import METRICS as COMMON_METRICS
from .common import (SamplingConfig, completion_fields, max_tokens_field, mean_or_none, own_temperature_field,
                     own_top_p_field, sampled_by, temperature_field, to_sample, top_p_field)
from .curves import NOT_SEED, Curve
from .opensir_prompts import (NOT_NEW, TEACHER_EXAMPLES, TeacherOutput, TeacherShot, fenced_teacher_prompt,
                              few_shot_problems, has_box, parse_fenced, parse_teacher, repeats, student_prompt,
                              student_stop, teacher_prompt, teacher_stop)
from .opensir_rewards import select_groups, solvability, student_reward, teacher_reward

if TYPE_CHECKING:
    from .common import Context, Phase, StepResult


class RewardWeights(BaseModel):
    """Teacher reward = sum of weight * term (each term in [0, 1]). Reference: 1, 1, 1, 0.1."""

    model_config = ConfigDict(extra="forbid")
    solvability: float = Field(1.0, ge=0, description="weight of the solve-rate window term")
    diversity: float = Field(1.0, ge=0, description="weight of the embedding-distance term")
    length: float = Field(1.0, ge=0, description="weight of the student-solution-length term")
    format: float = Field(0.1, ge=0, description="weight of the format term (parsed, <think> when required)")


class TeacherExample(BaseModel):
    """One worked example in the teacher's few-shot prompt (completion prompts; chat prompts have none)."""

    model_config = ConfigDict(extra="forbid")
    reference: str = Field(min_length=1, description="the reference problem the example starts from")
    problem: str = Field(min_length=1, description="the new problem written from it")
    concepts: str = Field("", description="the concepts it tests, comma-separated (needed by teacher_format: tags)")
    program: str | None = Field(None, description="a program printing its answer (needed by labels: program/agree)")

    def shot(self) -> TeacherShot:
        return TeacherShot(self.reference, self.problem, self.concepts, self.program)


class OpenSIRConfig(BaseModel):
    """method: section of a recipe for OpenSIR."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["opensir"] = "opensir"
    references_per_step: int = Field(2, ge=1, description="archive problems the teacher riffs on per round")
    teacher_samples: int = Field(8, ge=2, description="candidate problems per reference (one GRPO group)")
    student_samples: int = Field(8, ge=2, description="solutions per valid problem (vote + GRPO group)")
    temperature: float = temperature_field(1.0, "the teacher (and students)")
    top_p: float = top_p_field(1.0, "the teacher (and students)")
    student_temperature: float | None = own_temperature_field("students")
    student_top_p: float | None = own_top_p_field("students")
    solve_low: float = Field(0.5, ge=0, le=1, description="lowest solve rate (majority share) inside the window")
    solve_peak: float = Field(0.7, ge=0, le=1, description="solve rate where solvability is 1 (reference: the midpoint)")
    solve_high: float = Field(0.9, ge=0, le=1, description="highest solve rate inside the window")
    solvability_edges: Literal["reference", "zero"] = Field(
        "reference", description="reference: window inclusive, edges worth 1/(reachable rates k/G inside it); "
        "zero: window exclusive, edges worth 0")
    diversity_top_k: int = Field(5, ge=1, description="archive neighbours averaged for the diversity term")
    length_cap: int = Field(256, ge=1, description="student tokens at which the length term saturates (reference 1000)")
    length_zero_unparsed: bool = Field(
        True, description="length term 0 when no student answer parsed (reference); false pays rambling anyway")
    weights: RewardWeights = Field(default_factory=RewardWeights)
    student_format_weight: float = Field(0.1, ge=0, description="student reward for a \\boxed{} answer")
    teacher_groups: int = Field(1, ge=0, description="teacher groups trained per round")
    student_groups: int = Field(1, ge=0, description="student groups (one problem each) trained per round")
    group_rank: Literal["reference", "reward"] = Field(
        "reference", description="reference: rank groups by solvability + diversity (teacher: its variance); "
        "reward: by the whole teacher reward, length and format included")
    leak_filter: bool = Field(
        True, description="a problem shorter than min_problem_chars, with tags, or whose majority answer has no "
        "digit or is a number from its own text earns 0 and never trains students (beyond the reference)")
    min_problem_chars: int = Field(30, ge=0, description="shortest problem the leak filter accepts (reference 30)")
    refuse_copies: bool = Field(True, description=(
        "a teacher problem that repeats one its prompt showed (its reference, an archive example, a worked "
        "example; case and spacing aside) is refused before students see it, as an output that gives no "
        "problem (beyond the reference, which leaves copies to the diversity term; that term pays nothing "
        "outside the window, and on the bundled model up to 16 of 16 outputs a step became copies of the "
        "reference, RESULTS.md eighth sitting)"))
    think: bool | None = Field(
        None, description="teacher explains how its problem differs inside <think> first, and the format term "
        "requires it; null = on for chat prompts, off for few-shot completion prompts")
    initial_pool: int = Field(
        512, ge=0, description="problems grown from the seeds before RL (phase 0, no training); 0 = none")
    initial_pool_overgen: float = Field(
        5.0, ge=1.0, description="phase 0 stops after initial_pool * this many candidates even if the pool is short")
    seeds: list[str] = Field(default_factory=lambda: ["What is 1+1?"], min_length=1,
                             description="problems the archive starts from")
    embedder: str = Field("bundled", description="sentence-transformers model dir, or bundled (all-MiniLM-L6-v2)")
    few_shot: int = Field(2, ge=0, le=8, description="archive problems shown in the teacher prompt")
    teacher_format: Literal["tags", "fenced"] = Field("tags", description=(
        "tags: <problem>, <program> and <concepts> (the reference); fenced: few-shot completion prompts only, "
        "the problem on a 'New problem:' line and its program in a ```python block, the shapes a base model "
        "saw in pretraining, with no concepts (the reference never trains on them)"))
    teacher_grading: Literal["reference", "graded"] = Field("reference", description=(
        "reference: every term 0 for an output that does not parse or lands outside the window; graded: "
        "-1 for an output that does not parse or whose program gives no label, -0.5 for a valid problem "
        "outside the window, the reference sum inside it (Absolute Zero's shape), so a teacher group has "
        "spread whenever its outputs differ in quality"))
    teacher_examples: list[TeacherExample] = Field(
        default_factory=lambda: [TeacherExample(**vars(shot)) for shot in TEACHER_EXAMPLES], min_length=1,
        description="worked examples of the teacher's task in its few-shot prompt; a base model writes problems "
        "like them, so their difficulty and style set where the teacher starts")
    teacher_max_tokens: int = max_tokens_field(192, "teacher completion")
    labels: LabelMode = Field("majority", description=LABELS_DESCRIPTION)
    verifier: str | None = Field(None, description=VERIFIER_DESCRIPTION + " (labels: program or agree)")
    stated_numbers_only: bool = Field(True, description=STATED_NUMBERS_DESCRIPTION)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description=(
        "limits for the teacher's label programs (labels: program/agree) that need Python"))
    student_max_tokens: int = max_tokens_field(384, "student solution")

    @model_validator(mode="after")
    def _window(self) -> "OpenSIRConfig":
        if not (self.solve_low < self.solve_peak < self.solve_high):
            raise ValueError(
                "solve_low < solve_peak < solve_high must hold, got "
                f"solve_low={self.solve_low}, solve_peak={self.solve_peak}, solve_high={self.solve_high}"
            )
        verifier_spec(self.verifier)
        for i, example in enumerate(self.teacher_examples):
            why = "it has none" if example.program is None else checked_program(example.program)[1]
            if self.labels != "majority" and why:
                raise ValueError(f"teacher_examples[{i}] needs a program printing its answer (labels: {self.labels}): "
                                 f"{why}")
            if self.teacher_format == "tags" and not example.concepts.strip():
                raise ValueError(f"teacher_examples[{i}] needs concepts (teacher_format: tags shows them)")
            length = len(one_line(example.problem))
            if self.leak_filter and length < self.min_problem_chars:
                raise ValueError(f"teacher_examples[{i}].problem is {length} characters, shorter than "
                                 f"min_problem_chars ({self.min_problem_chars}): the teacher would copy a problem the "
                                 "leak filter refuses; lengthen the example or lower min_problem_chars")
        if self.verifier and self.labels == "majority":
            raise ValueError("verifier needs labels: program or agree (it compares answers with what the "
                             "teacher's program printed; a vote has no program)")
        return self

    def shots(self) -> tuple[TeacherShot, ...]:
        return tuple(example.shot() for example in self.teacher_examples)

    def uses_think(self, chat: bool) -> bool:
        return chat if self.think is None else self.think

    def fenced(self, chat: bool) -> bool:
        """Whether the teacher writes the fenced format (completion prompts only)."""
        return self.teacher_format == "fenced" and not chat

    def teacher_sampling(self) -> SamplingConfig:
        return SamplingConfig.of(self.temperature, self.top_p, self.teacher_max_tokens)

    def student_sampling(self) -> SamplingConfig:
        return SamplingConfig.of(self.temperature, self.top_p, self.student_max_tokens, self.student_temperature,
                                 self.student_top_p)


# --------------------------------------------------------------------------- the step
def eval_prompt(question: str, chat: ChatFn | None = None) -> str:
    """Held-out evaluation asks questions the way students are asked during training."""
    return student_prompt(question, chat)


def eval_stop(chat: bool) -> list[str]:
    return student_stop(chat)


def _pool_phase(runner: "Context", cfg: OpenSIRConfig) -> bool:
    """Phase 0 (no training) until the pool holds initial_pool problems or the
    over-generation budget is spent; both counts come from the archive, so it resumes."""
    if cfg.initial_pool <= 0:
        return False
    totals = runner.problems.phase_totals("pool", ("teacher_samples",))
    if totals["steps"] == 0 and runner.problems.last_step() >= 0:
        return False  # RL already started (or the run predates phase 0): never go back
    admitted = runner.problems.count_valid() - len(cfg.seeds)
    return admitted < cfg.initial_pool and totals["teacher_samples"] < cfg.initial_pool * cfg.initial_pool_overgen


def _references(runner: "Context", cfg: OpenSIRConfig, rng: np.random.Generator, add_seeds: bool,
                think: bool, program: bool = False) -> tuple[list[dict], list[str], list[dict], list[list[str]]]:
    """Reference problems, their teacher prompts, the seed rows of a fresh archive, and the
    problems each prompt shows (reference, archive examples, worked examples)."""
    archive = runner.problems
    seed_rows: list[dict] = []
    n_pool, fetch = archive.count_valid(), archive.valid_at  # a few rows by position: no full read
    if not n_pool:  # a fresh run: the seeds become the first archived problems
        if add_seeds:
            emb = runner.embedder.encode(list(cfg.seeds))
            seed_rows = [{"key": f"seed-{i}", "text": t, "role": "seed", "method": "opensir", "valid": True,
                          "embedding": emb[i], "embed_model": runner.embedder.name} for i, t in enumerate(cfg.seeds)]
        seeds = [{"id": None, "key": f"seed-{i}", "text": t} for i, t in enumerate(cfg.seeds)]
        n_pool, fetch = len(seeds), lambda positions: [seeds[i] for i in positions]
    picks = rng.choice(n_pool, size=cfg.references_per_step, replace=n_pool < cfg.references_per_step)
    refs = fetch([int(i) for i in picks])
    prompts, shown, worked = [], [], few_shot_problems(cfg.shots())
    for pick, ref in zip(picks, refs):
        k = min(cfg.few_shot, n_pool - 1)  # examples: other pool positions than the reference's
        others = [int(i) + (i >= pick) for i in rng.choice(n_pool - 1, size=k, replace=False)] if k else []
        examples = [p["text"] for p in fetch(others)]
        prompts.append(fenced_teacher_prompt(ref["text"], examples, program, cfg.shots())
                       if cfg.fenced(runner.chat is not None)
                       else teacher_prompt(ref["text"], examples, runner.chat, think, program, cfg.shots()))
        shown.append([ref["text"], *examples, *worked])
    return refs, prompts, seed_rows, shown


# How this method's step metrics combine over rounds (methods.common.METRICS says how to read it).
METRICS = {**COMMON_METRICS, "teacher_samples": "sum", "admitted": "sum", "teacher_groups_trained": "sum",
           "student_groups_trained": "sum"}
# The report's curves of this method's own metrics (methods.curves has the common ones).
CURVES = {"diversity_mean": Curve("diversity_mean", "diversity (mean per valid problem)",
                                  "SELECT step, AVG(diversity) FROM problems WHERE valid = 1 AND diversity IS NOT NULL "
                                  f"AND {NOT_SEED} GROUP BY step")}
PANELS = (("diversity.png", "Problem diversity", "diversity score (0 = duplicate, higher = novel)",
           ("diversity_mean",), None),)


def play(runner: "Context", step: int, phase: "Phase", round_: int = 0) -> "StepResult":
    """One round: the teacher writes problems from reference problems, students solve and vote.

    In phase 0 (initial pool) the same round runs without training: it only grows the pool.
    """
    from ..embed import diversity_scores
    from .common import StepResult

    r = _Round(runner, step, round_)
    with phase("references"):
        r.refs, prompts, r.problems, r.shown = _references(runner, r.cfg, r.rng, round_ == 0, r.think,
                                                            r.labelled)
    with phase("teacher"):
        _teach(r, prompts)
    with phase("parse"):
        _parse(r)
    with phase("execute"):  # the independent answer: the label (program/agree) or the audit's reference
        _label(r)
    with phase("student"):
        _solve(r)
    with phase("embed"):
        r.div = _diversity(runner, r.cfg, [x[2].problem for x in r.parsed], diversity_scores)
    with phase("rewards"):
        _score(r)
    return StepResult(r.problems, r.solutions, _samples(r), _metrics(r))


class _Round:
    """What one round has made so far, stage by stage. A candidate is (reference index, completion,
    parsed output, key); stats are keyed by the candidate's key."""

    def __init__(self, runner: "Context", step: int, round_: int) -> None:
        from .common import step_seed

        self.runner, self.step, self.round = runner, step, round_
        self.cfg: OpenSIRConfig = runner.method
        self.seed = runner.seed
        self.chat = runner.chat is not None
        self.think = self.cfg.uses_think(self.chat)
        self.fenced, self.labelled = self.cfg.fenced(self.chat), self.cfg.labels != "majority"
        self.pool_phase = _pool_phase(runner, self.cfg)
        self.prefix = f"{step}" if round_ == 0 else f"{step}r{round_}"
        self.rng = np.random.default_rng(step_seed(self.seed, step, "reference", round_))
        self.refs: list[dict] = []
        self.shown: list[list[str]] = []  # per reference, the problems its prompt showed
        self.copies = 0  # parsed outputs refused as repeats of a shown problem
        self.problems: list[dict] = []  # archive rows (new seeds first, then this round's candidates)
        self.teacher: list = []  # teacher completions, one group per reference
        self.cands: list[tuple[int, Any, TeacherOutput, str]] = []
        self.parsed: list[tuple[int, Any, TeacherOutput, str]] = []  # candidates that parsed (and have a label)
        self.executed: dict[str, Executed] = {}
        self.student: list = []  # student completions, one group per parsed candidate
        self.div: list[tuple[float, np.ndarray]] = []
        self.stats: dict[str, dict] = {}
        self.solutions: list[dict] = []
        self.teacher_ids: list[str] = []  # teacher groups to train
        self.student_keys: list[str] = []  # problems whose student group trains
        self.teacher_tps = self.student_tps = 0.0


def _teach(r: _Round, prompts: list[str]) -> None:
    """teacher_samples new problems from each reference's prompt."""
    from .common import step_seed, tokens_per_s

    t = time.perf_counter()
    r.teacher = r.runner.sampler.generate(
        prompts, n=r.cfg.teacher_samples, **r.cfg.teacher_sampling().kwargs(),
        seed=step_seed(r.seed, r.step, "teacher", r.round), stop=teacher_stop(r.chat, r.fenced, r.labelled))
    r.teacher_tps = tokens_per_s(r.teacher, time.perf_counter() - t)


def _parse(r: _Round) -> None:
    """Each teacher output as a problem (tagged or fenced), or the reason it is not one."""
    r.cands = [(k, c, parse_fenced(c.text, c.finish_reason, r.labelled) if r.fenced
                else parse_teacher(c.text, c.finish_reason), f"{r.prefix}-{k}-{j}")
               for k, group in enumerate(r.teacher) for j, c in enumerate(group)]
    r.parsed = [x for x in r.cands if x[2].valid]
    if r.cfg.refuse_copies:
        _refuse_copies(r)


def _refuse_copies(r: _Round) -> None:
    """A parsed problem that repeats one its prompt showed is no new problem: refused before any
    program runs or student samples it (graded: -1, as an output that gives no problem)."""
    for k, _c, out, _key in r.parsed:
        if repeats(out.problem, r.shown[k]):
            out.valid, out.reason = False, NOT_NEW
            r.copies += 1
    r.parsed = [x for x in r.parsed if x[2].valid]


def _label(r: _Round) -> None:
    """Run each parsed problem's program; with executed labels, one without an answer is refused
    before any student runs (reward 0, reason kept)."""
    cfg = r.cfg
    truths = execute([x[2].problem for x in r.parsed], [x[2].program if r.labelled else None for x in r.parsed],
                     cfg.sandbox, whole_output=cfg.verifier is not None, stated_only=cfg.stated_numbers_only)
    r.executed = {x[3]: ex for x, ex in zip(r.parsed, truths)}
    if r.labelled:
        for x in r.parsed:
            if r.executed[x[3]].answer is None:
                x[2].valid, x[2].reason = False, f"no label: {r.executed[x[3]].reason}"
        r.parsed = [x for x in r.parsed if x[2].valid]


def _solve(r: _Round) -> None:
    """student_samples answers to every problem that goes on."""
    from .common import step_seed, tokens_per_s

    if not r.parsed:
        return
    t = time.perf_counter()
    r.student = r.runner.sampler.generate(
        [student_prompt(x[2].problem, r.runner.chat) for x in r.parsed], n=r.cfg.student_samples,
        **r.cfg.student_sampling().kwargs(), seed=step_seed(r.seed, r.step, "student", r.round),
        stop=student_stop(r.chat))
    r.student_tps = tokens_per_s(r.student, time.perf_counter() - t)


def _score(r: _Round) -> None:
    """Each problem's rewards and archive rows, and the teacher and student groups to train."""
    cfg = r.cfg
    r.stats = {x[3]: _score_problem(x[2], sols, float(d), emb, cfg, r.think, r.executed[x[3]])
               for x, sols, (d, emb) in zip(r.parsed, r.student, r.div)}
    teacher_rank: dict[str, list[float]] = {}
    for k, c, out, key in r.cands:
        st = r.stats.get(key)
        teacher_rank.setdefault(f"{r.prefix}:t{k}", []).append(
            teacher_value(st, cfg) if cfg.teacher_grading == "graded" else _rank_value(st, cfg))
        r.problems.append(_problem_row(r.runner, r.refs[k], c, out, key, st, r.executed.get(key)))
        for c2, ans, agrees, rew in (zip(st["sols"], st["answers"], st["agrees"], st["rewards"]) if st else ()):
            r.solutions.append({"problem_key": key, **completion_fields(c2), "answer": ans, "agrees": agrees,
                                "reward": rew})
    trainable = {k: st for k, st in r.stats.items() if st["admitted_for_students"]}
    floor = r.runner.min_reward_std
    r.teacher_ids, r.student_keys = select_groups(
        teacher_rank, {k: _rank_value(st, cfg) for k, st in trainable.items()},
        cfg.teacher_groups, cfg.student_groups, {k: st["rewards"] for k, st in trainable.items()},
        teacher_floor=floor * teacher_scale(cfg), student_floor=floor * student_scale(cfg))


def _samples(r: _Round) -> list[Sample]:
    """The trainer's samples: the chosen teacher groups and student groups (none in the pool phase)."""
    if r.pool_phase:
        return []
    cfg, samples = r.cfg, []
    for k, c, out, key in r.cands:
        if f"{r.prefix}:t{k}" in r.teacher_ids:
            samples.append(to_sample(c, teacher_value(r.stats.get(key), cfg), f"{r.prefix}:t{k}",
                                     _span_mask(r.runner, c, out.concept_span), teacher_scale(cfg)))
    for key in r.student_keys:
        samples += [to_sample(c, rew, f"{r.prefix}:s{key}", scale=student_scale(cfg))
                    for c, rew in zip(r.stats[key]["sols"], r.stats[key]["rewards"])]
    return samples


def _metrics(r: _Round) -> dict[str, Any]:
    """The round's step metrics (merged over rounds as METRICS says)."""
    cfg, stats, cands, n = r.cfg, r.stats, r.cands, len(r.cands)
    scores = [st["score"] for st in stats.values()]
    audits = [st["audit"] for st in stats.values() if st["audit"] is not None]
    pool = {}
    if r.pool_phase:  # progress towards initial_pool (step_metrics.pool_progress puts it in the step line)
        archive = r.runner.problems
        pool = {"pool_target": cfg.initial_pool, "pool_budget": int(cfg.initial_pool * cfg.initial_pool_overgen),
                "pool_admitted_before": max(0, archive.count_valid() - len(cfg.seeds)),
                "pool_samples_before": archive.phase_totals("pool", ("teacher_samples",))["teacher_samples"]}
    return {
        "phase": "pool" if r.pool_phase else "rl",
        **pool,
        "admitted": sum(1 for st in stats.values() if st["admitted"]),
        "teacher_samples": n,
        "parse_rate": len(r.parsed) / n if n else 0.0,
        "valid_rate": sum(1 for st in stats.values() if st["admitted"]) / n if n else 0.0,
        "leak_rate": sum(1 for st in stats.values() if st["leak"]) / n if n else 0.0,
        "copy_rate": r.copies / n if n else 0.0,
        "labelled_rate": sum(1 for ex in r.executed.values() if ex.answer is not None) / n if n else 0.0,
        "label_precision": mean_or_none([1.0 if a else 0.0 for a in audits]),
        "label_audited": len(audits),
        "teacher_reward_mean": mean_or_none([p["teacher_reward"] for p in r.problems if p.get("role") == "teacher"]),
        "student_reward_mean": mean_or_none([x for st in stats.values() for x in st["rewards"]]),
        "solve_rate_mean": mean_or_none([st["solve_rate"] for st in stats.values()]),
        "diversity_mean": mean_or_none([s.diversity for s in scores if s.reward > 0]),
        "solvability_mean": mean_or_none([s.solvability for s in scores]),
        "solution_tokens_mean": mean_or_none([st["tokens"] for st in stats.values()]),
        "teacher_groups_trained": len(r.teacher_ids) if not r.pool_phase else 0,
        "student_groups_trained": len(r.student_keys) if not r.pool_phase else 0,
        "teacher_tokens_per_s": r.teacher_tps,
        "student_tokens_per_s": r.student_tps,
    }


def _diversity(runner: "Context", cfg: OpenSIRConfig, texts: list[str], scorer) -> list[tuple[float, np.ndarray]]:
    """(diversity, embedding) per new problem, against the archive, the prompt's fixed
    examples (copying one must not look novel) and the round's other candidates."""
    if not texts:
        return []
    new = runner.embedder.encode(texts)
    archived, _ = runner.problems.embedding_matrix()
    if "few_shot_emb" not in runner.cache:
        runner.cache["few_shot_emb"] = runner.embedder.encode(few_shot_problems(cfg.shots()))
    fixed = runner.cache["few_shot_emb"]
    reference = np.vstack([m for m in (archived, fixed) if len(m)])
    return list(zip(scorer(new, reference, cfg.diversity_top_k).tolist(), new))


def teacher_scale(cfg: OpenSIRConfig) -> float:
    """The largest teacher reward: every term is at most 1, times its weight."""
    w = cfg.weights
    return w.solvability + w.diversity + w.length + w.format


def student_scale(cfg: OpenSIRConfig) -> float:
    return 1.0 + cfg.student_format_weight


def _score_problem(out: TeacherOutput, sols: list, div: float, emb: np.ndarray, cfg: OpenSIRConfig,
                   think: bool, truth: Executed | None = None) -> dict:
    """Vote, label, leak check, teacher score and student rewards of one parsed problem.

    labels majority: the vote is the label and its share the solve rate (reference).
    program: the executed answer is the label; students earn 1 for matching it, and the
    solve rate (hence solvability) is the share of all G students that did. agree: the
    vote is the label only when it equals the executed answer, else the problem earns 0.
    """
    from .common import answer_leak_reason, has_clear_majority

    executed = truth.answer if truth is not None else None
    verdicts = judge([c.text for c in sols], executed, bind_verifier(cfg.verifier, out.problem, executed))
    v, answers = verdicts.vote, verdicts.answers
    if cfg.labels == "program":
        agrees, rate, label = verdicts.correct, verdicts.solve_rate, executed
    else:
        agrees, rate, label = list(v.agrees), v.solve_rate, v.answer
    leak = (answer_leak_reason(out.problem, label, cfg.min_problem_chars, cfg.verifier is None)
            if cfg.leak_filter else None)
    refused = None
    if cfg.labels == "agree" and not verdicts.audit:
        refused = "majority differs from the executed answer"
    tokens = [len(c.token_ids) for c in sols]
    ok = leak is None and refused is None
    score = teacher_reward(ok, rate, div, float(np.mean(tokens)) if tokens else 0.0, cfg,
                           n_samples=len(sols), any_parsed=v.n_parsed > 0, formatted=out.has_think or not think)
    in_window = cfg.solve_low <= rate <= cfg.solve_high and score.solvability > 0
    rewards = [student_reward(a, has_box(c.text), cfg.student_format_weight) for a, c in zip(agrees, sols)]
    clear = cfg.labels == "program" or has_clear_majority(answers)
    return {"vote": v, "answers": answers, "agrees": agrees, "score": score, "rewards": rewards, "sols": sols,
            "emb": emb, "tokens": float(np.mean(tokens)) if tokens else 0.0, "leak": leak, "refused": refused,
            "label": label, "solve_rate": rate, "audit": verdicts.audit,
            "admitted": ok and in_window, "admitted_for_students": ok and clear}


def teacher_value(st: dict | None, cfg: OpenSIRConfig) -> float:
    """The reward a teacher output trains on.

    reference: the weighted sum, 0 on every term for an output that did not parse (st None) or
    was not admitted. graded: -1 for an output that did not parse, whose program gave no label
    (st None) or that leaks its answer, -0.5 for a valid problem whose solve rate fell outside
    the window, and the reference sum inside it.
    """
    if cfg.teacher_grading == "reference":
        return st["score"].reward if st else 0.0
    if st is None or st["leak"] or st["refused"]:
        return -1.0
    return st["score"].reward if st["admitted"] else -0.5


def _rank_value(st: dict | None, cfg: OpenSIRConfig) -> float:
    """What groups are ranked by: solvability + diversity (reference) or the whole reward."""
    if st is None:
        return 0.0
    s = st["score"]
    return s.reward if cfg.group_rank == "reward" else s.solvability + s.diversity


def _span_mask(runner: "Context", c, span: tuple[int, int] | None) -> list[int] | None:
    """Token mask that is 0 for tokens starting inside the character span."""
    if span is None:
        return None
    start, end = span
    return [0 if start <= off < end else 1 for off in runner.sampler.char_offsets(c.token_ids)]


def _problem_row(runner: "Context", ref: dict, c, out: TeacherOutput, key: str, st: dict | None,
                 truth: Executed | None = None) -> dict:
    """Archive row of one teacher candidate. valid = admitted to the reference pool."""
    reason = out.reason
    if st is not None and not st["admitted"]:
        reason = (f"leak: {st['leak']}" if st["leak"] else st["refused"] or "solve rate outside the window")
    row: dict[str, Any] = {
        "key": key, "text": out.problem, "concepts": out.concepts, "role": "teacher",
        "method": "opensir", "valid": bool(st and st["admitted"]), "invalid_reason": reason, "raw": c.text,
        "n_tokens": len(c.token_ids), "finish_reason": c.finish_reason, **sampled_by(c),
    }
    if out.program is not None:
        row["program"] = out.program
    if truth is not None:
        row.update({"executed_answer": truth.answer, "executed_source": truth.source, "execute_error": truth.reason})
    if ref.get("id") is not None:
        row["parent_id"] = ref["id"]
    else:
        row["parent_key"] = ref["key"]
    if st:
        score, v = st["score"], st["vote"]
        row.update({
            "majority_answer": v.answer, "solve_rate": st["solve_rate"], "n_parsed": v.n_parsed,
            "label": st["label"], "label_source": "majority" if runner.method.labels == "majority" else "executed",
            "n_samples": v.n_total, "solvability": score.solvability, "diversity": score.diversity,
            "length": score.length, "format": score.format, "teacher_reward": score.reward,
        })
        if st["audit"] is not None:
            row["majority_correct"] = st["audit"]
        if st["admitted"]:  # diversity is measured against the pool (reference), so only it is embedded
            row.update({"embedding": st["emb"], "embed_model": runner.embedder.name})
    else:
        row.update({"teacher_reward": 0.0, "format": 0.0})
    if runner.method.teacher_grading == "graded":
        row["teacher_grade"] = teacher_value(st, runner.method)
    return row
