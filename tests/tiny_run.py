"""Shared helpers for the end-to-end hardening tests: the smallest real run and its checks."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import yaml

# The quickstart shape with the smallest settings that still train: one reference,
# two teacher and two student samples, 32 tokens each.
TINY = {
    "model": {"gguf": "bundled"},
    "sampler": {"n_ctx": 2048, "n_parallel": 4},
    "method": {"name": "opensir", "references_per_step": 1, "teacher_samples": 2, "student_samples": 2,
               "teacher_max_tokens": 32, "student_max_tokens": 32, "length_cap": 32,
               "initial_pool": 0,
               # force_valid_problem writes the same problem every round; from the second step the pool
               # shows it, and the copy check (tests/test_opensir.py) would refuse it, so no step would train
               "refuse_copies": False},
    "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024},
    "run": {"steps": 2, "seed": 0},
}


def write_recipe(path: Path, run_dir: Path, steps: int, seed: int = 0, **method) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"].update({"dir": str(run_dir), "steps": steps, "seed": seed})
    data["method"].update(method)
    path.write_text(yaml.safe_dump(data))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapter_file(run_dir: Path, stored: str) -> Path:
    """Adapter paths are stored relative to the run dir (older archives: absolute)."""
    p = Path(stored)
    return p if p.is_absolute() else run_dir / p


def read_run(run_dir: Path) -> dict:
    """Everything committed, read with plain sqlite3 (independent of minisir.archive)."""
    conn = sqlite3.connect(f"{(run_dir / 'archive.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        steps = [r[0] for r in conn.execute("SELECT step FROM steps ORDER BY step")]
        problems = conn.execute(
            "SELECT id, step, key, text, valid, parent_id, majority_answer FROM problems ORDER BY id").fetchall()
        solutions = conn.execute(
            "SELECT s.step, p.step, p.key, s.text, s.answer FROM solutions s JOIN problems p ON p.id = s.problem_id "
            "ORDER BY s.id").fetchall()
        orphans = conn.execute(
            "SELECT COUNT(*) FROM solutions WHERE problem_id NOT IN (SELECT id FROM problems)").fetchone()[0]
        adapters = conn.execute("SELECT step, path, sha256 FROM adapters ORDER BY step").fetchall()
        bad_parents = conn.execute(
            "SELECT COUNT(*) FROM problems WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM problems)"
        ).fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return {"steps": steps, "problems": problems, "solutions": solutions, "orphans": orphans,
            "adapters": adapters, "bad_parents": bad_parents, "integrity": check}


def check_committed(run_dir: Path, n_steps: int) -> dict:
    """The invariants every (resumed) run directory must satisfy; returns read_run()."""
    info = read_run(run_dir)
    assert info["integrity"] == "ok"
    assert info["steps"] == list(range(n_steps)), f"steps not consecutive: {info['steps']}"
    for s in range(n_steps):
        assert any(p[1] == s for p in info["problems"]), f"step {s} has no problems"
    assert all(sol_step == prob_step for sol_step, prob_step, *_ in info["solutions"])
    assert info["orphans"] == 0 and info["bad_parents"] == 0
    keys = [(p[1], p[2]) for p in info["problems"]]
    assert len(keys) == len(set(keys)), "a problem was committed twice"
    committed = set()
    for step, path, digest in info["adapters"]:
        f = adapter_file(run_dir, path)
        assert f.is_file(), f"adapter of step {step} missing: {f}"
        assert sha256(f) == digest, f"adapter of step {step} does not match its sha256"
        committed.add(f.name)
    listed = list((run_dir / "adapters").iterdir()) if (run_dir / "adapters").exists() else []
    on_disk = {p.name for p in listed if not p.is_dir()}
    assert on_disk == committed, f"uncommitted or temp files in adapters/: {sorted(on_disk - committed)}"
    peft = {p.name for p in listed if p.is_dir()}  # PEFT copies for a server (sampler.backend: openai)
    assert all(f"{d}.gguf" in committed for d in peft), f"PEFT adapters of uncommitted steps: {sorted(peft)}"
    trained = [step for step, _, _ in info["adapters"]]  # steps without samples save no trainer state
    state_dir = run_dir / "state"
    state = sorted(p.name for p in state_dir.iterdir()) if state_dir.exists() else []
    assert state == ([f"step-{max(trained):06d}"] if trained else []), f"state/ holds {state}"
    return info


def force_training(monkeypatch) -> None:
    """Make every OpenSIR round train, whatever this CPU's kernels sample.

    A round whose samples give no trainable group gets one real group of two fixed
    completions with rewards 1 and 0, so a test of what a *training* step writes (adapter,
    trainer state) never depends on sampled text. Everything else stays real.
    """
    from minisir.methods import opensir
    from minisir.trainer import Sample

    real = opensir.play

    def play(runner, step, phase, round_=0):
        result = real(runner, step, phase, round_)
        if not result.samples:
            prompt = runner.sampler.tokenize("Problem: What is 2 + 2?\nSolution:")
            result.samples = [Sample(prompt, runner.sampler.tokenize(text, add_bos=False), [], reward, "forced")
                              for text, reward in ((" 2 + 2 = 4. The answer is \\boxed{4}.", 1.0),
                                                   (" 2 + 2 = 5. The answer is \\boxed{5}.", 0.0))]
        return result

    monkeypatch.setattr(opensir, "play", play)


# --------------------------------------------------------------------------- a known problem each round
# What sampled text holds differs between CPUs, so a test of what a *valid* problem leads to
# (votes, rewards, embeddings, a trained group) replaces the first proposal of each round by a
# fixed valid one and the answers to it by fixed ones: two right and one wrong per three, a
# clear majority inside every solve-rate window. Everything else is sampled and scored for real.
FORCED = {
    "opensir": ("A shop sells pens for 3 dollars each. How many dollars do 7 pens cost?",
                "</problem>\n<concepts>multiplication, money", "21", "20"),
    "arithmetic": ("What is 123 + 456 - 78?", "", "501", "500"),
    "algebra": ("Tom has 5 more apples than Sara. Together they have 29 apples. How many apples does Sara have?",
                "", "12", "17"),
    "coding": ("Read two integers on one line and print their sum.",
               "</problem>\n<tests>\n" + "".join(f"<input>\n{a} {b}\n</input>\n<output>\n{a + b}\n</output>\n"
                                              for a, b in ((1, 2), (5, 7), (10, 20), (0, 0), (3, 4))),
               "a, b = map(int, input().split())\nprint(a + b)\n", "print(-1)\n"),
}


def forced_answers(kind: str, n: int) -> list[str]:
    """The answers given to the forced problem by n solvers: n - 1 right, the last one wrong."""
    _, _, right, wrong = FORCED[kind]
    return [right] * (n - 1) + [wrong]


def _force_known_problem(monkeypatch, module, kind_of) -> None:
    def rewrite(runner, round_, call, prompts, n, groups, as_text):
        kind = kind_of(runner)
        problem, tail, _, _ = FORCED[kind]
        if call == 1:  # a round's first call writes the problems
            groups[0][0] = as_text(groups[0][0], problem + tail)
            return groups
        for i, prompt in enumerate(prompts):  # the solvers of the forced problem
            if " ".join(problem.split()) in " ".join(prompt.split()):
                answers = forced_answers(kind, len(groups[i]))
                texts = answers if kind == "coding" else [f"The result is {a}, so \\boxed{{{a}}}." for a in answers]
                groups[i] = [as_text(c, t) for c, t in zip(groups[i], texts)]
        return groups

    force_sampled(monkeypatch, module, rewrite)


def force_valid_problem(monkeypatch) -> None:
    """OpenSIR: each round's first teacher completion is FORCED["opensir"]'s problem, solved 2 in 3."""
    from minisir.methods import opensir

    _force_known_problem(monkeypatch, opensir, lambda runner: "opensir")


def force_valid_proposal(monkeypatch) -> None:
    """SQLM: each round's first proposal is FORCED[topic]'s problem (with 5 tests for coding), solved 2 in 3."""
    from minisir.methods import sqlm

    _force_known_problem(monkeypatch, sqlm, lambda runner: runner.recipe.method.topic)


def force_sampled(monkeypatch, module, rewrite) -> None:
    """Each round of `module.play` samples for real, then `rewrite(runner, round_, call, prompts, n, groups,
    as_text)` replaces what it likes: sampled text differs between CPUs, so a test of what given text
    leads to (labels, rewards, groups) writes that text itself; everything else runs for real. call
    counts the round's generate calls from 1; as_text(c, t) is completion c as if the sampler had
    written t."""
    import dataclasses

    real = module.play

    def play(runner, step, phase, round_=0):
        sampler = runner.sampler
        generate = sampler.generate

        def as_text(c, text):
            return dataclasses.replace(c, text=text, token_ids=sampler.tokenize(text, add_bos=False), logprobs=[],
                                       finish_reason="stop")

        calls = [0]

        def forced(prompts, n=1, **kw):
            calls[0] += 1
            return rewrite(runner, round_, calls[0], prompts, n, generate(prompts, n=n, **kw), as_text)

        sampler.generate = forced
        try:
            return real(runner, step, phase, round_)
        finally:
            del sampler.generate

    monkeypatch.setattr(module, "play", play)


def run_one_step(recipe: dict) -> tuple[dict[str, dict], dict]:
    """Run a one-step recipe (a dict) to its commit; (problem text -> problem with solutions, step metrics)."""
    from minisir.archive import Archive
    from minisir.loop import Runner
    from minisir.recipe import parse_recipe

    runner = Runner(parse_recipe(recipe), progress=False)
    try:
        assert runner.run() == 1
    finally:
        runner.close()
    with Archive.open(recipe["run"]["dir"], readonly=True) as arc:
        rows = {p["text"]: arc.problem(p["id"]) for p in arc.problems(limit=100)}
        return rows, arc.steps()[0]["metrics"]
