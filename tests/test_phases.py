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
from minisir.step_metrics import summary_line
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
    # the pool step reports its progress against the target and the budget, in the archive and the line
    pool = metrics[0]
    assert (pool["pool_target"], pool["pool_budget"], pool["pool_samples_before"]) == (1, 2, 0)
    assert pool["admitted"] == round(pool["valid_rate"] * pool["teacher_samples"])
    line = summary_line(0, pool)
    assert f"{pool['admitted']}/1 admitted, 2/2 samples" in line
    assert ("budget spent" in line) == (pool["admitted"] == 0)
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


# Probe texts in the policy's own shapes, as SyncGuard.remember keeps them from a step's samples.
_PROBES = [("Question: Tom has 35 marbles and gives 12 to his sister. How many are left?\nAnswer:",
            " Tom has 35 - 12 = 23 marbles left. The answer is \\boxed{23}."),
           ("Write a problem.\nProblem:", " What is 47 * 3?\nprogram: print(47 * 3)"),
           ("Q: What is 84 / 7?\nA:", " 84 / 7 = 12, so the answer is \\boxed{12}.")]


def _seed_lora(trainer, seed: int, std: float = 0.03, layers_below: int | None = None) -> None:
    """Seeded LoRA B weights that move the probe by about 0.5 nats/token (not a sampled step);
    `layers_below`: only those layers get one (the rest stay zero), as a half-loaded adapter."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                layer = int(name.split("layers.")[1].split(".")[0])
                keep = layers_below is None or layer < layers_below
                p.copy_(torch.randn(p.shape, generator=g) * std * keep)


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """A run whose step 0 committed an adapter the trainer holds (seeded), loaded in the sampler;
    also a half-loaded copy of it and another run's adapter, exported by the same trainer."""
    from minisir.grpo import Sample
    from minisir.run_dir import sha256_file

    tmp = tmp_path_factory.mktemp("sync")
    runner = Runner(parse_recipe(_recipe(tmp / "run")), progress=False)
    trainer = runner.trainer
    _seed_lora(trainer, 1)
    other = trainer.export_adapter(tmp / "other-run.gguf")
    _seed_lora(trainer, 0, layers_below=9)  # gemma3-270m has 18 layers
    half = trainer.export_adapter(tmp / "half.gguf")
    _seed_lora(trainer, 0)
    path = trainer.export_adapter(runner.run_dir / "adapters" / "step-000000.gguf")
    runner.archive.commit_step({"step": 0}, [], [], {"path": "adapters/step-000000.gguf", "sha256": sha256_file(path)})
    runner.sync.remember([Sample(runner.sampler.tokenize(p), runner.sampler.tokenize(c, add_bos=False), [], 0.0,
                                        f"g{i}") for i, (p, c) in enumerate(_PROBES)])
    runner.sampler.set_adapter(path, 1.0)
    try:
        yield runner, path, half, other
    finally:
        runner.close()


def test_sync_guard_passes_the_adapter_the_trainer_holds(synced):
    runner, path, _, _ = synced
    runner.sampler.set_adapter(path, 1.0)
    m = runner.sync.check(1)
    assert abs(m["sync_scale"] - 1.0) < runner.recipe.trainer.sync_tolerance and m["sync_match"] == 1.0
    assert m["sync_tokens"] > 60 and m["sync_effect"] > 0.2 and "sync_recovered" not in m
    assert runner.sampler.adapter_path == path


@pytest.mark.parametrize("fault", ["half scale", "double scale", "missing", "half-loaded", "other run"])
def test_sync_guard_catches_each_fault_and_recovers_by_reloading(synced, fault):
    """Each fault is measured out of tolerance; the check then reloads the committed adapter,
    re-exported from the trainer's state, and the step goes on in sync."""
    from minisir.sync import verdict

    runner, path, half, other = synced
    tolerance = runner.recipe.trainer.sync_tolerance
    if fault == "missing":
        runner.sampler.clear_adapter()
    else:
        held, scale = {"half scale": (path, 0.5), "double scale": (path, 2.0), "half-loaded": (half, 1.0),
                       "other run": (other, 1.0)}[fault]
        runner.sampler.set_adapter(held, scale)
    confidence = runner.recipe.trainer.sync_confidence
    assert verdict(runner.sync.read(), 1.0, tolerance, confidence) is not None, f"{fault} must be called"
    m = runner.sync.check(1)
    assert m["sync_recovered"] == 1.0 and abs(m["sync_scale"] - 1.0) < tolerance and m["sync_match"] == 1.0
    assert runner.sampler.adapter_path == path and runner.sampler.adapter_scale == 1.0


def test_sync_guard_rewrites_a_damaged_adapter_file_from_the_trainer(synced):
    """The committed file holds other weights (a copy gone wrong): the reload re-exports it
    from the trainer's state, so the file matches its committed checksum again."""
    import shutil

    from minisir.run_dir import sha256_file

    runner, path, _, other = synced
    committed = runner.archive.latest_adapter()["sha256"]
    shutil.copyfile(other, path)
    runner.sampler.set_adapter(path, 1.0)
    assert runner.sync.check(1)["sync_recovered"] == 1.0
    assert sha256_file(path) == committed


def test_sync_guard_stops_with_one_line_when_reloading_does_not_help(synced, monkeypatch):
    """A loader that applies half the scale it is asked for (a broken hot-load): the reload
    cannot fix it, so the run stops, naming the adapter and how to resume."""
    from minisir.sampler import Sampler

    runner, path, _, _ = synced
    monkeypatch.setattr(runner.sampler, "set_adapter",
                        lambda p, scale=1.0: Sampler.set_adapter(runner.sampler, p, scale * 0.5))
    runner.sampler.set_adapter(path, 1.0)
    with pytest.raises(MinisirError) as err:
        runner.sync.check(5)
    text = str(err.value)
    assert text.startswith("step 5 not committed") and "\n" not in text
    assert str(path) in text and "rerun the same command to resume" in text
    monkeypatch.undo()
    runner.sampler.set_adapter(path, 1.0)


def test_a_milder_fault_must_show_on_two_checks_in_a_row_to_stop_the_run(synced, monkeypatch):
    """A loader that always loads the half-loaded adapter. With sync_confidence raised out of reach, only
    the gap test can call it (own-completion gap about 0.3 against a limit near 0.12), which makes it a
    milder fault (sync.gross is false) whatever the hypotheses' z reads on this CPU: the first failed
    check warns and the step goes on; the next one fails again and stops the run. A pass clears it."""
    from minisir.sampler import Sampler
    from minisir.sync import gap_limit, gross, verdict

    runner, path, half, _ = synced
    monkeypatch.setattr(runner.recipe.trainer, "sync_confidence", 100.0)
    confidence, tolerance = runner.recipe.trainer.sync_confidence, runner.recipe.trainer.sync_tolerance
    if runner.sync.floor is None:  # measured once per runner, before any fault is forced
        runner.sync.floor = runner.sync.base_probe_gap()
    limit = gap_limit(runner.sync.floor, runner.recipe.trainer.sync_gap_ratio)
    monkeypatch.setattr(runner.sampler, "set_adapter",
                        lambda p, scale=1.0: Sampler.set_adapter(runner.sampler, half, scale))
    runner.sampler.set_adapter(path, 1.0)
    reading = runner.sync.read()
    assert not gross(reading, confidence) and verdict(reading, 1.0, tolerance, confidence) is None
    assert reading.own_gap > 2 * limit, "the gap test must call it with room to spare"
    assert runner.sync.check(5)["sync_strike"] == 1.0
    with pytest.raises(MinisirError) as err:
        runner.sync.check(6)
    assert str(err.value).startswith("step 6 not committed") and "\n" not in str(err.value)
    assert "own completions" in str(err.value)
    monkeypatch.undo()
    runner.sync.strike = True
    runner.sampler.set_adapter(path, 1.0)
    assert "sync_strike" not in runner.sync.check(7) and runner.sync.strike is False  # a pass clears it


def test_a_recipe_with_the_first_guards_knob_is_told_its_new_name():
    from minisir.errors import RecipeError

    data = _recipe("runs/x")
    data["trainer"]["max_logprob_gap"] = 0.05
    with pytest.raises(RecipeError, match="replaced by sync_confidence"):
        parse_recipe(data)


def test_bench_sync_tells_the_healthy_adapter_from_each_fault(tmp_path):
    """`minisir bench sync` on a committed run (seeded LoRA, saved trainer state, three solution
    rows for probe texts, as a step leaves): the healthy adapter passes, every forced fault is called."""
    from minisir.bench.sync import bench_sync
    from minisir.run_dir import sha256_file

    run_dir = tmp_path / "run"
    runner = Runner(parse_recipe(_recipe(run_dir)), progress=False)
    try:
        _seed_lora(runner.trainer, 0)
        path = runner.trainer.export_adapter(run_dir / "adapters" / "step-000000.gguf")
        runner._save_state(0)
        solved = [("What is 84 / 7?", " 84 / 7 = 12, so the answer is \\boxed{12}."),
                  ("Tom has 35 marbles and gives 12 to his sister. How many are left?",
                   " Tom has 35 - 12 = 23 marbles left. The answer is \\boxed{23}."),
                  ("What is 47 * 3?", " 47 * 3 = 141. The answer is \\boxed{141}.")]
        runner.archive.commit_step(
            {"step": 0}, [{"key": f"p{i}", "text": q, "valid": True} for i, (q, _) in enumerate(solved)],
            [{"problem_key": f"p{i}", "text": a, "answer": "x"} for i, (_, a) in enumerate(solved)],
            {"path": "adapters/step-000000.gguf", "sha256": sha256_file(path)})
        _seed_lora(runner.trainer, 1)
        other = runner.trainer.export_adapter(tmp_path / "other-run.gguf")
    finally:
        runner.close()
    result = bench_sync(run_dir, other=other)
    cases = result["cases"]
    assert result["step"] == 0 and set(cases) == {"healthy", "half scale", "double scale", "missing", "half-loaded",
                                                  "other run"}
    assert not cases["healthy"]["called"] and cases["healthy"]["sync_match"] == 1.0
    missed = {k: (v["sync_match"], v["sync_z"], v.get("sync_scale"), v.get("sync_scale_se"))
              for k, v in cases.items() if k not in ("healthy", "other run") and not v["called"]}
    assert not missed, missed
    # A random adapter of another seed moves the probe in an unrelated direction: how clearly the
    # probe tells it apart depends on its length, so only the reading is checked here (the runner
    # test above calls it on four probe texts; README gives a trained run's adapter).
    assert cases["other run"]["sync_match"] != 1.0 or cases["other run"]["sync_scale"] < 0.75
