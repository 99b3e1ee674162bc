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
               "initial_pool": 0},
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
