"""The loop around the methods, on the bundled model: OpenSIR's phase 0 (initial pool),
sampling rounds pooled into one optimizer step, and the sampler/trainer sync guard.

Nothing here depends on what the model samples: phase 0 ends by its candidate budget
whatever the pool admits, and the guard's failure is forced with a random adapter.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from minisir.errors import MinisirError
from minisir.loop import Runner
from minisir.recipe import parse_recipe

from test_sampler import _write_adapter
from tiny_run import TINY, read_run


def _recipe(run_dir, **method) -> dict:
    data = json.loads(json.dumps(TINY))
    data["run"].update({"dir": str(run_dir), "steps": 1, "seed": 0})
    data["method"].update(method)
    return data


def _metrics(run_dir) -> list[dict]:
    conn = sqlite3.connect(run_dir / "archive.sqlite")
    try:
        return [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM steps ORDER BY step")]
    finally:
        conn.close()


def test_initial_pool_is_phase_zero_then_rl_steps_count(tmp_path):
    """Two candidates per step and a budget of 1 * 2 candidates: exactly one pool step,
    untrained and committed, then run.steps RL steps; a rerun has nothing left to do."""
    run_dir = tmp_path / "run"
    recipe = parse_recipe(_recipe(run_dir, initial_pool=1, initial_pool_overgen=2.0))
    runner = Runner(recipe, progress=False)
    try:
        assert runner.run() == 2
    finally:
        runner.close()
    metrics = _metrics(run_dir)
    assert [m["phase"] for m in metrics] == ["pool", "rl"]
    assert metrics[0]["teacher_groups_trained"] == 0 and metrics[0]["student_groups_trained"] == 0
    info = read_run(run_dir)
    assert all(step != 0 for step, _, _ in info["adapters"]), "phase 0 must not train"
    assert not (run_dir / "state" / "step-000000").exists()
    again = Runner(recipe, progress=False)
    try:
        assert again.run() == 0
    finally:
        again.close()


def test_rounds_pool_into_one_step(tmp_path):
    run_dir = tmp_path / "run"
    data = _recipe(run_dir)
    data["run"]["rounds_per_step"] = 2
    runner = Runner(parse_recipe(data), progress=False)
    try:
        runner.run()
    finally:
        runner.close()
    (m,) = _metrics(run_dir)
    assert m["rounds"] == 2 and m["teacher_samples"] == 4  # 1 reference x 2 candidates, twice
    keys = [p[2] for p in read_run(run_dir)["problems"]]
    assert any(k.startswith("0-") for k in keys) and any(k.startswith("0r1-") for k in keys)
    assert len(keys) == len(set(keys))


def test_sync_guard_names_a_wrong_adapter(tmp_path):
    """The sampler holds an adapter the trainer never made: the probe gap is far above the
    limit and the check stops with one line naming that adapter."""
    runner = Runner(parse_recipe(_recipe(tmp_path / "run")), progress=False)
    try:
        # same model, no adapter (the fresh LoRA adds exactly zero): the gap is the engines' floor
        assert runner.check_sync() == pytest.approx(runner._sync_floor, abs=1e-4)
        wrong = _write_adapter(tmp_path / "stale.gguf", runner.gguf, rank=8, seed=3)
        runner.sampler.set_adapter(wrong, 4.0)
        with pytest.raises(MinisirError, match="stale.gguf") as err:
            runner.check_sync(5)
        assert "step 5 not committed" in str(err.value) and "\n" not in str(err.value)
    finally:
        runner.close()


def test_sync_guard_trips_on_a_half_scaled_or_missing_adapter(tmp_path):
    """The trainer holds a LoRA that moves the probe (seeded weights, not a sampled step); llama.cpp
    with that LoRA at scale 1 passes, at half scale or without it the guard stops the run."""
    import torch

    runner = Runner(parse_recipe(_recipe(tmp_path / "run")), progress=False)
    try:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in runner.trainer.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.03)  # moves the probe ~0.25 nats/token
        path = runner.trainer.export_adapter(tmp_path / "moved.gguf")
        limit = runner.recipe.trainer.max_logprob_gap
        runner.sampler.set_adapter(path, 1.0)
        healthy = runner.check_sync()
        assert healthy - runner._sync_floor < limit
        runner.sampler.set_adapter(path, 0.5)
        with pytest.raises(MinisirError, match="moved.gguf.*adapter_scale"):
            runner.check_sync(3)
        runner.sampler.clear_adapter()
        with pytest.raises(MinisirError, match="none \\(the base model\\)"):
            runner.check_sync(3)
    finally:
        runner.close()
