"""One step of self-play for each method: sample, parse, vote, score, build GRPO groups.

Each `play_*` returns archive rows and trainer samples; `loop.Runner.step` trains,
exports and commits them. Invalid model output is recorded with its reason and never
reaches training as a problem.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .answers import extract_boxed, majority_vote
from .loop import StepResult, completion_fields, step_seed
from .sampler import Completion
from .trainer import Sample

if TYPE_CHECKING:
    from .loop import Runner, _Phases


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _sample(c: Completion, reward: float, group: str, mask: list[int] | None = None) -> Sample:
    return Sample(
        prompt_ids=c.prompt_ids,
        completion_ids=c.token_ids,
        sampler_logprobs=c.logprobs,
        reward=float(reward),
        group=group,
        loss_mask=mask,
        truncated=c.finish_reason == "length",
    )


def _tokens_per_s(groups: list[list[Completion]], seconds: float) -> float:
    n = sum(len(c.token_ids) for g in groups for c in g)
    return round(n / seconds, 2) if seconds > 0 else 0.0


def _span_mask(runner: "Runner", c: Completion, span: tuple[int, int] | None) -> list[int] | None:
    """Token mask that is 0 for tokens starting inside the character span."""
    if span is None:
        return None
    start, end = span
    return [0 if start <= off < end else 1 for off in runner.sampler.char_offsets(c.token_ids)]


def _vote(solutions: list[Completion]) -> tuple[Any, list[str | None]]:
    answers = [extract_boxed(c.text) for c in solutions]
    return majority_vote(answers), answers


# --------------------------------------------------------------------------- OpenSIR
def play_opensir(runner: "Runner", step: int, phase: "_Phases") -> StepResult:
    """Teacher writes problems from reference problems; students solve and vote."""
    from .embed import diversity_scores
    from .methods import opensir as osir

    cfg = runner.recipe.method
    seed = runner.recipe.run.seed
    archive = runner.archive
    rng = np.random.default_rng(step_seed(seed, step, "reference"))
    problems: list[dict] = []
    solutions: list[dict] = []

    with phase("references"):
        n_pool = archive.count_valid()
        fetch = archive.valid_at  # a few rows by position: no full read of a large archive
        if not n_pool:  # a fresh run: the seeds become the first archived problems
            seed_emb = runner.embedder.encode(list(cfg.seeds))
            for i, text in enumerate(cfg.seeds):
                problems.append({"key": f"seed-{i}", "text": text, "role": "seed", "method": "opensir",
                                 "valid": True, "embedding": seed_emb[i], "embed_model": runner.embedder.name})
            seeds = [{"id": None, "key": f"seed-{i}", "text": t} for i, t in enumerate(cfg.seeds)]
            n_pool, fetch = len(seeds), lambda positions: [seeds[i] for i in positions]
        picks = rng.choice(n_pool, size=cfg.references_per_step, replace=n_pool < cfg.references_per_step)
        refs = fetch([int(i) for i in picks])
        prompts = []
        for pick, ref in zip(picks, refs):
            k = min(cfg.few_shot, n_pool - 1)  # examples: other pool positions than the reference's
            others = [int(i) + (i >= pick) for i in rng.choice(n_pool - 1, size=k, replace=False)] if k else []
            examples = [p["text"] for p in fetch(others)]
            prompts.append(osir.teacher_prompt(ref["text"], examples, runner.chat))

    with phase("teacher"):
        t = time.perf_counter()
        teacher = runner.sampler.generate(
            prompts, n=cfg.teacher_samples, max_tokens=cfg.teacher_max_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, seed=step_seed(seed, step, "teacher"), stop=list(osir.TEACHER_STOP))
        teacher_tps = _tokens_per_s(teacher, time.perf_counter() - t)

    with phase("parse"):
        cands = []  # (ref index, completion, parsed, key)
        for r, group in enumerate(teacher):
            for j, c in enumerate(group):
                cands.append((r, c, osir.parse_teacher(c.text, c.finish_reason), f"{step}-{r}-{j}"))
        valid = [x for x in cands if x[2].valid]

    with phase("student"):
        t = time.perf_counter()
        student = runner.sampler.generate(
            [osir.student_prompt(x[2].problem, runner.chat) for x in valid], n=cfg.student_samples,
            max_tokens=cfg.student_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=step_seed(seed, step, "student"), stop=list(osir.STUDENT_STOP)) if valid else []
        student_tps = _tokens_per_s(student, time.perf_counter() - t)

    with phase("embed"):
        new_emb = runner.embedder.encode([x[2].problem for x in valid]) if valid else np.zeros((0, 1))
        ref_emb, _ = archive.embedding_matrix()
        if "few_shot_emb" not in runner.cache:  # the prompt's fixed examples must not look novel
            runner.cache["few_shot_emb"] = runner.embedder.encode(osir.few_shot_problems())
        fixed = runner.cache["few_shot_emb"]
        reference = np.vstack([m for m in (ref_emb, fixed) if len(m)]) if len(ref_emb) or len(fixed) else fixed
        div = diversity_scores(new_emb, reference, cfg.diversity_top_k) if valid else np.zeros(0)

    with phase("rewards"):
        stats: dict[str, dict] = {}
        for v, (x, sols) in enumerate(zip(valid, student)):
            vote, answers = _vote(sols)
            finished = [len(c.token_ids) for c in sols if c.finish_reason == "stop"]
            mean_tokens = float(np.mean(finished)) if finished else 0.0
            score = osir.teacher_reward(True, vote.solve_rate, float(div[v]), mean_tokens, cfg)
            rewards = [osir.student_reward(a, osir.has_box(c.text), cfg.student_format_weight)
                       for a, c in zip(vote.agrees, sols)]
            stats[x[3]] = {"vote": vote, "answers": answers, "score": score, "rewards": rewards,
                           "sols": sols, "emb": new_emb[v], "tokens": mean_tokens}
        teacher_groups: dict[str, list[float]] = {}
        for r, c, parsed, key in cands:
            st = stats.get(key)
            teacher_groups.setdefault(f"t{r}", []).append(st["score"].reward if st else 0.0)
            problems.append(_opensir_problem_row(runner, refs[r], c, parsed, key, st))
            for c2, ans, agrees, rew in (zip(st["sols"], st["answers"], st["vote"].agrees, st["rewards"])
                                         if st else ()):
                solutions.append({"problem_key": key, **completion_fields(c2), "answer": ans,
                                  "agrees": agrees, "reward": rew})
        t_ids, p_keys = osir.select_groups(
            teacher_groups, {k: st["score"].reward for k, st in stats.items()},
            cfg.teacher_groups, cfg.student_groups, {k: st["rewards"] for k, st in stats.items()})

    samples: list[Sample] = []
    for r, c, parsed, key in cands:
        if f"t{r}" in t_ids:
            st = stats.get(key)
            samples.append(_sample(c, st["score"].reward if st else 0.0, f"t{r}",
                                   _span_mask(runner, c, parsed.concept_span)))
    for key in p_keys:
        st = stats[key]
        samples += [_sample(c, rew, f"s{key}") for c, rew in zip(st["sols"], st["rewards"])]

    scores = [st["score"] for st in stats.values()]
    all_teacher = [r for g in teacher_groups.values() for r in g]
    metrics = {
        "teacher_samples": len(cands),
        "valid_rate": len(valid) / len(cands) if cands else 0.0,
        "teacher_reward_mean": _mean(all_teacher),
        "student_reward_mean": _mean([r for st in stats.values() for r in st["rewards"]]),
        "solve_rate_mean": _mean([st["vote"].solve_rate for st in stats.values()]),
        "diversity_mean": _mean([s.diversity for s in scores]),
        "solvability_mean": _mean([s.solvability for s in scores]),
        "solution_tokens_mean": _mean([st["tokens"] for st in stats.values()]),
        "teacher_groups_trained": len(t_ids),
        "student_groups_trained": len(p_keys),
        "teacher_tokens_per_s": teacher_tps,
        "student_tokens_per_s": student_tps,
    }
    return StepResult(problems, solutions, samples, metrics)


def _opensir_problem_row(runner: "Runner", ref: dict, c: Completion, parsed, key: str, st: dict | None) -> dict:
    row: dict[str, Any] = {
        "key": key, "text": parsed.problem, "concepts": parsed.concepts, "role": "teacher",
        "method": "opensir", "valid": parsed.valid, "invalid_reason": parsed.reason, "raw": c.text,
        "n_tokens": len(c.token_ids), "finish_reason": c.finish_reason,
    }
    if ref.get("id") is not None:
        row["parent_id"] = ref["id"]
    else:
        row["parent_key"] = ref["key"]
    if st:
        score, vote = st["score"], st["vote"]
        row.update({
            "majority_answer": vote.answer, "solve_rate": vote.solve_rate, "n_parsed": vote.n_parsed,
            "n_samples": vote.n_total, "solvability": score.solvability, "diversity": score.diversity,
            "length": score.length, "format": score.format, "teacher_reward": score.reward,
            "embedding": st["emb"], "embed_model": runner.embedder.name,
        })
    else:
        row.update({"teacher_reward": 0.0, "format": 0.0})
    return row


# --------------------------------------------------------------------------- SQLM
def play_sqlm(runner: "Runner", step: int, phase: "_Phases") -> StepResult:
    """Proposer writes problems on a topic; solvers answer N times (math) or write code."""
    from .methods import sqlm

    cfg = runner.recipe.method
    seed = runner.recipe.run.seed
    topic = cfg.topic
    prop_seed = step_seed(seed, step, "proposer")

    with phase("proposer"):
        t = time.perf_counter()
        prompts = [sqlm.proposer_prompt(topic, runner.chat, seed=prop_seed + i, min_tests=cfg.min_tests)
                   for i in range(cfg.proposals_per_step)]
        proposed = [g[0] for g in runner.sampler.generate(
            prompts, n=1, max_tokens=cfg.proposer_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=prop_seed, stop=sqlm.proposer_stop(topic))]
        proposer_tps = _tokens_per_s([proposed], time.perf_counter() - t)

    with phase("parse"):
        parsed = [sqlm.parse_proposal(c.text, topic, c.finish_reason, cfg.min_tests, cfg.max_tests)
                  for c in proposed]
        valid = [i for i, p in enumerate(parsed) if p.valid]

    with phase("solver"):
        t = time.perf_counter()
        solved = runner.sampler.generate(
            [sqlm.solver_prompt(parsed[i].problem, topic, runner.chat) for i in valid], n=cfg.solver_samples,
            max_tokens=cfg.solver_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=step_seed(seed, step, "solver"), stop=sqlm.solver_stop(topic)) if valid else []
        solver_tps = _tokens_per_s(solved, time.perf_counter() - t)

    with phase("rewards"):
        texts = [[c.text for c in group] for group in solved]
        if topic == "coding":
            scores = sqlm.score_code_batch([(tx, parsed[i].tests) for tx, i in zip(texts, valid)], cfg)
        else:
            scores = [sqlm.score_math(tx, cfg) for tx in texts]
        by_index = dict(zip(valid, zip(scores, solved)))
        proposer_rewards = [by_index[i][0].proposer_reward if i in by_index else 0.0 for i in range(len(parsed))]
        solver_rewards = [by_index[i][0].solver_rewards if i in by_index else None for i in range(len(parsed))]
        plan = sqlm.plan_groups(step, topic, parsed, proposer_rewards, solver_rewards, cfg)

    problems, solutions, samples = [], [], []
    for i, (c, p) in enumerate(zip(proposed, parsed)):
        key = f"{step}-{i}"
        row: dict[str, Any] = {"key": key, "text": p.problem, "role": "proposer", "method": "sqlm",
                               "valid": p.valid, "invalid_reason": p.reason, "raw": c.text, "topic": topic,
                               "teacher_reward": plan.proposer_rewards[i], "n_tokens": len(c.token_ids),
                               "finish_reason": c.finish_reason}
        if p.tests:
            row["tests"] = [[t.stdin, t.expected_stdout] for t in p.tests]
        if i in by_index:
            score, group = by_index[i]
            if topic == "coding":
                rates = score.pass_rates
                row.update({"solve_rate": float(np.mean(rates)), "n_samples": len(group)})
                answers = [None] * len(group)
                agrees = [None] * len(group)
            else:
                row.update({"majority_answer": score.majority_answer, "n_samples": len(group),
                            "solve_rate": score.majority_size / len(group), "majority_size": score.majority_size})
                answers = score.answers
                agrees = [r > 0 for r in score.solver_rewards]
            for c2, ans, ag, rew in zip(group, answers, agrees, score.solver_rewards):
                solutions.append({"problem_key": key, **completion_fields(c2), "answer": ans, "agrees": ag,
                                  "reward": rew})
            if i in plan.solver_groups:
                samples += [_sample(c2, rew, plan.solver_groups[i]) for c2, rew in zip(group, score.solver_rewards)]
        problems.append(row)
    if plan.proposer_group:
        samples += [_sample(c, r, plan.proposer_group) for c, r in zip(proposed, plan.proposer_rewards)]

    solver_all = [r for s in scores for r in s.solver_rewards]
    metrics = {
        "topic": topic,
        "proposals": len(parsed),
        "valid_rate": len(valid) / len(parsed) if parsed else 0.0,
        "teacher_reward_mean": _mean(plan.proposer_rewards),
        "student_reward_mean": _mean(solver_all),
        "solve_rate_mean": _mean([row["solve_rate"] for row in problems if row.get("solve_rate") is not None]),
        "solution_tokens_mean": _mean([float(len(c.token_ids)) for g in solved for c in g]),
        "proposer_trained": int(plan.proposer_group is not None),
        "solver_groups_trained": len(plan.solver_groups),
        "teacher_tokens_per_s": proposer_tps,
        "student_tokens_per_s": solver_tps,
    }
    return StepResult(problems, solutions, samples, metrics)
