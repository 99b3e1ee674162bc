"""`minisir bench sync RUN`: the sync guard's reading on a real run's adapter, healthy and faulted.

The guard (minisir/sync.py) must pass every healthy step and stop every real fault. This
measures both on one committed run: the trainer loads the run's latest state, llama.cpp
holds, in turn, that step's adapter (healthy), the oldest adapter still kept (stale), the
same adapter at half and double scale, no adapter, the adapter with its upper half of layers
dropped (half-loaded), and optionally another run's adapter. Each row gives the adapter scale
llama.cpp matches best with its paired z, the least-squares slope, whether the recipe's
sync_confidence calls it, and what the first guard (a mean gap on one probe text, limit 0.05
nats above the no-adapter gap) would have said.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import MinisirError

FIRST_GUARD_LIMIT = 0.05  # the first guard's trainer.max_logprob_gap default, for comparison


def _stored_recipe(run_dir: Path):
    """The run's resolved recipe from its archive, pointed at run_dir (older keys dropped)."""
    from ..archive import ARCHIVE_NAME, Archive
    from ..recipe import parse_recipe

    path = run_dir / ARCHIVE_NAME
    if not path.is_file():
        raise MinisirError(f"{path} not found: pass a run directory that `minisir run` wrote")
    archive = Archive.open(path, readonly=True)
    try:
        info = archive.run_info()
    finally:
        archive.close()
    if not info:
        raise MinisirError(f"{path} holds no run yet: run `minisir run` first")
    data = info["recipe"]
    data.get("trainer", {}).pop("max_logprob_gap", None)  # the first guard's knob
    data.setdefault("run", {})["dir"] = str(run_dir)
    return parse_recipe(data, str(path))


def write_half_loaded(adapter: Path, out: Path) -> Path:
    """A copy of a GGUF LoRA with the tensors of its upper half of layers left out."""
    import gguf

    reader = gguf.GGUFReader(str(adapter))
    blocks = sorted({int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")})
    if not blocks:
        raise MinisirError(f"{adapter}: no blk.N tensors; not a LoRA adapter minisir wrote")
    cut = blocks[len(blocks) // 2]
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(reader.fields["adapter.lora.alpha"].contents()))
    for t in reader.tensors:
        if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < cut:
            writer.add_tensor(t.name, t.data.copy().reshape([int(x) for x in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _probe_texts(runner, count: int) -> list[tuple[list[int], list[int]]]:
    """The latest step's solver completions, asked with the method's own solver prompt."""
    from ..methods import method_module
    from ..sync import probe_text

    rows = runner.archive.db.conn.execute(
        "SELECT p.text, s.text FROM solutions s JOIN problems p ON p.id = s.problem_id "
        "WHERE s.step = (SELECT MAX(step) FROM solutions) AND length(s.text) > 0 GROUP BY p.id LIMIT ?",
        (count,)).fetchall()
    prompt = method_module(runner.recipe.method.name).eval_prompt
    return [probe_text(runner.sampler.tokenize(prompt(problem, runner.chat)),
                       runner.sampler.tokenize(text, add_bos=False)) for problem, text in rows]


def bench_sync(run_dir: Path, other: Path | None = None, texts: int = 3) -> dict:
    """Readings for the healthy adapter and each forced fault; JSON-ready."""
    from ..loop import Runner
    from ..sync import gap_limit, verdict

    recipe = _stored_recipe(Path(run_dir))
    confidence, tolerance = recipe.trainer.sync_confidence or 3.0, recipe.trainer.sync_tolerance
    runner = Runner(recipe, progress=False)
    try:
        latest = runner.archive.latest_adapter()
        if latest is None:
            raise MinisirError(f"{run_dir}: no committed adapter yet; nothing to check")
        adapters = sorted(runner.adapter_dir.glob("step-*.gguf"))
        healthy = runner.run_dir / latest["path"]
        runner.sync.texts = _probe_texts(runner, texts)
        floor = runner.sync.base_probe_gap()
        max_gap = gap_limit(floor, recipe.trainer.sync_gap_ratio)
        with tempfile.TemporaryDirectory() as tmp:
            cases = {"healthy": (healthy, 1.0), "half scale": (healthy, 0.5), "double scale": (healthy, 2.0),
                     "missing": (None, 0.0), "half-loaded": (write_half_loaded(healthy, Path(tmp) / "half.gguf"), 1.0)}
            if adapters and adapters[0] != healthy:
                cases[f"stale ({adapters[0].stem})"] = (adapters[0], 1.0)
            if other is not None:
                cases["other run"] = (Path(other), 1.0)
            rows = {}
            for name, (path, scale) in cases.items():
                if path is None:
                    runner.sampler.clear_adapter()
                else:
                    runner.sampler.set_adapter(path, scale)
                reading = runner.sync.read()
                first = runner.sync.probe_gap(base=False) - floor
                called = verdict(reading, 1.0, tolerance, confidence, max_gap, floor) is not None
                rows[name] = {**reading.metrics(), "called": called,
                              "first_guard_excess": round(first, 4), "first_guard_called": first > FIRST_GUARD_LIMIT}
        return {"run": str(run_dir), "step": latest["step"], "adapter": latest["path"], "confidence": confidence,
                "tolerance": tolerance, "no_adapter_gap": round(floor, 4),
                "gap_limit": None if max_gap is None else round(max_gap, 4), "cases": rows}
    finally:
        runner.close()
