"""A disk failure while a step writes its adapter or trainer state: one-line error, the last
committed step intact, and the same command resumes.

Real tiny runs on the bundled model (in-process, through the real CLI). The writer
(`export.write_lora_gguf`, or the trainer's `save_state`) leaves a partial temp file and
raises ENOSPC, what a full disk does halfway through a write.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from click.testing import CliRunner

import minisir.export
from minisir.cli import main
from minisir.trainer import GRPOTrainer

from tiny_run import check_committed, force_training, read_run, sha256, write_recipe

# Not marked slow: about 1 minute for both cases on 2 CPU cores (2 minutes when the cores are busy).


def _disk_full(partial: Path) -> OSError:
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"GGUF" + b"\0" * 4096)  # what a full disk leaves behind
    return OSError(errno.ENOSPC, "No space left on device", str(partial))


def _step_of(name: str) -> int:
    return int(name.split("-")[1].split(".")[0])


# (seed, run.steps, writer that fails, step that fails). force_training makes every step
# train, so the writers run at every step whatever this CPU samples: the failure at step 1
# is forced, not hoped for.
CASES = [(0, 3, "adapter", 1), (0, 3, "state", 1)]


@pytest.mark.parametrize("seed, steps, where, fail_step", CASES, ids=[c[2] for c in CASES])
def test_disk_full_while_writing(tmp_path, monkeypatch, seed, steps, where, fail_step):
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "tiny.yaml", run_dir, steps=steps, seed=seed)
    real_writer = minisir.export.write_lora_gguf
    real_save = GRPOTrainer.save_state
    failed = []

    def failing_writer(model, path: Path, *args, **kwargs):
        if where == "adapter" and _step_of(path.name) >= 1:
            failed.append(("adapter", _step_of(path.name)))
            raise _disk_full(path.parent / f".{path.name}.partial.tmp")
        return real_writer(model, path, *args, **kwargs)

    def failing_save(self, directory: Path):
        directory = Path(directory)
        if where == "state" and _step_of(directory.name) >= 1:
            failed.append(("state", _step_of(directory.name)))
            raise _disk_full(directory.parent / f".{directory.name}.tmp-partial" / "state.pt")
        return real_save(self, directory)

    force_training(monkeypatch)
    monkeypatch.setattr(minisir.export, "write_lora_gguf", failing_writer)
    monkeypatch.setattr(GRPOTrainer, "save_state", failing_save)
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert failed == [(where, fail_step)], failed
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:], result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "No space left on device" in errors[0] and f"step {fail_step} not committed" in errors[0]
    assert "rerun the same command" in errors[0]

    # The last committed step is intact, with its adapters and trainer state.
    info = read_run(run_dir)
    assert info["steps"] == list(range(fail_step))
    trained = [a[0] for a in info["adapters"]]  # steps without samples save no trainer state
    state = run_dir / "state"
    assert sorted(p.name for p in (state.iterdir() if state.exists() else ()) if not p.name.startswith(".")) == \
        ([f"step-{max(trained):06d}"] if trained else [])
    kept = {}
    for step, path, digest in info["adapters"]:
        f = run_dir / path
        assert sha256(f) == digest
        kept[f] = f.read_bytes()

    # Disk space is back: the same command resumes and cleans the partial files.
    monkeypatch.setattr(minisir.export, "write_lora_gguf", real_writer)
    monkeypatch.setattr(GRPOTrainer, "save_state", real_save)
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 0, (result.stderr[-2000:], result.exception)
    assert "resuming" in result.stdout + result.stderr
    info = check_committed(run_dir, steps)
    assert all(f.read_bytes() == data for f, data in kept.items())
    if where == "adapter":
        assert any(a[0] == fail_step for a in info["adapters"]), "the failed step's adapter was written on resume"
