"""Crash and resume torture: a real tiny run killed (SIGKILL) at least 10 times, resumed each time.

Kills land at random moments after start (model loading, sampling, training, export) and,
on alternate rounds, at the instant a step starts writing its adapter/state temp files
(after letting 0-2 steps commit), the window where a half-written step would leak. Round 0 uses SIGTERM
instead and must stop cleanly with exit code 130 and a resume hint.

Afterwards the run must be complete and consistent (consecutive steps, every committed
adapter present with its sha256, no leftovers) and is compared with an uninterrupted run of
the same seed: on CPU they must be identical (problems, solutions, adapter bytes). When the
run completes before all kills are made, run.steps is raised by RAISE and the run resumed
(allowed: only model/method must match). The CLI runs as tests/forced_cli.py: each round's
first teacher completion is a known valid problem, so every step trains and writes an adapter
for the mid-write kills to land in, whatever this CPU samples. Left to sampling, about one step
in ten trained, most rounds finished before their kill, and the run grew past 110 steps in 30
minutes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_run import check_committed, read_run, write_recipe

pytestmark = pytest.mark.slow

FIRST_TARGET = 12  # run.steps at the start
RAISE = 12  # steps added whenever the run completes before all kills were made: more than a kill waits
KILLS = 10
MAX_DELAY = 60  # seconds: a random kill lands within loading and the first several steps (5-8 s each)
METHOD: dict = {}  # the tiny recipe as is
FORCED_CLI = Path(__file__).resolve().parent / "forced_cli.py"


_CHILDREN: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap_children():
    """A failing assertion must not leave a training process running."""
    yield
    for proc in _CHILDREN:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _CHILDREN.clear()


def _start(recipe: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(FORCED_CLI), "run", str(recipe)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    _CHILDREN.append(proc)
    return proc


def _writing(run_dir: Path) -> bool:
    """A step is between 'export started' and 'commit done': temp files exist."""
    for sub in ("adapters", "state"):
        d = run_dir / sub
        if d.is_dir() and any(p.name.startswith(".") or p.name.endswith(".tmp") for p in d.iterdir()):
            return True
    return False


def _wait_for(pred, proc: subprocess.Popen, timeout: float, poll: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if pred():
            return True
        time.sleep(poll)
    return False


def _steps(run_dir: Path) -> int:
    if not (run_dir / "archive.sqlite").exists():
        return 0
    try:
        return len(read_run(run_dir)["steps"])
    except Exception:  # noqa: BLE001 - the writer may hold it mid-checkpoint; try later
        return -1


def test_kill_and_resume_many_times(tmp_path):
    rng = random.Random(int(os.environ.get("MINISIR_TORTURE_SEED", "1234")))
    run_dir = tmp_path / "killed"
    target = FIRST_TARGET
    recipe = write_recipe(tmp_path / "killed.yaml", run_dir, steps=target, seed=7, **METHOD)
    log = tmp_path / "killed.log"
    t_start = time.monotonic()
    history = []

    # ---- round 0: SIGTERM once the loop is running -> clean stop, exit 130, resume hint
    proc = _start(recipe, log)
    assert _wait_for(lambda: b"steps:" in log.read_bytes(), proc, 300), log.read_text()[-3000:]
    time.sleep(rng.uniform(0.5, 8))
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=300)
    out = log.read_text(errors="replace")
    assert rc == 130, out[-3000:]
    assert "stopped cleanly; resume with: minisir run" in out and "Traceback" not in out
    history.append(("SIGTERM", rc, _steps(run_dir)))
    check_committed(run_dir, _steps(run_dir)) if _steps(run_dir) else None

    # ---- rounds 1..KILLS: SIGKILL at random moments / mid-write
    kills = 0
    while kills < KILLS:
        before = _steps(run_dir)
        offset = log.stat().st_size
        proc = _start(recipe, log)
        if kills % 2 == 0:
            # Mid-write: let `skip` steps of this process write and commit, then kill the
            # instant the next one starts writing its adapter/state files.
            skip = rng.randint(0, 2)
            # Temp files of the previous kill stay until the loop starts and cleans them.
            hit = _wait_for(lambda: b"steps:" in log.read_bytes()[offset:], proc, 300)
            for _ in range(skip + 1):
                hit = hit and _wait_for(lambda: not _writing(run_dir), proc, 300, poll=0.01)
                hit = hit and _wait_for(lambda: _writing(run_dir), proc, 300, poll=0.01)
            where = f"mid-write after {skip} more step(s)" if hit else "mid-write missed"
        else:
            delay = rng.uniform(0.2, MAX_DELAY)  # loading, sampling, training, exporting, committing
            time.sleep(delay)
            where = f"at {delay:.0f}s"
        if proc.poll() is not None:  # finished before we struck: make the run longer
            assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
            history.append(("finished", before, _steps(run_dir)))
            target = _steps(run_dir) + RAISE  # run.steps may change on resume (only model/method must match)
            write_recipe(recipe, run_dir, steps=target, seed=7, **METHOD)
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        after = _steps(run_dir)
        history.append((f"SIGKILL {where}", before, after))
        assert after >= before, history

    # ---- let it finish, then the invariants
    proc = _start(recipe, log)
    rc = proc.wait(timeout=1800)
    out = log.read_text(errors="replace")
    assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    killed = check_committed(run_dir, target)
    torture_s = time.monotonic() - t_start

    # ---- the same seed, uninterrupted
    clean_dir = tmp_path / "clean"
    clean_recipe = write_recipe(tmp_path / "clean.yaml", clean_dir, steps=target, seed=7, **METHOD)
    proc = _start(clean_recipe, tmp_path / "clean.log")
    assert proc.wait(timeout=1800) == 0, (tmp_path / "clean.log").read_text()[-3000:]
    clean = check_committed(clean_dir, target)

    def problems_by_step(info):
        return [[(p[2], p[3], p[4]) for p in info["problems"] if p[1] == s] for s in range(target)]

    def digests(info):
        return [a[2] for a in info["adapters"]]

    same_problems = [a == b for a, b in zip(problems_by_step(killed), problems_by_step(clean))]
    same_adapters = [a == b for a, b in zip(digests(killed), digests(clean))]
    trained = [a[0] for a in killed["adapters"]]
    report = (f"steps={target} kills={kills} history={history} torture_s={torture_s:.0f} "
              f"steps_with_adapter={trained} clean_steps_with_adapter={[a[0] for a in clean['adapters']]} "
              f"same_problems_per_step={same_problems} same_adapter_sha={same_adapters}")
    print(report)
    (Path(os.environ.get("MINISIR_TORTURE_REPORT", os.devnull))).write_text(report + "\n")
    # Step 0 starts from the same base model and (seed, step) draws: its problems must match.
    assert same_problems[0], report
    # Resume restores the adapter, LoRA weights, optimizer and RNG state, and every random
    # draw comes from (seed, step): on CPU the killed run is bit-identical to the clean one.
    # (CUDA kernels may reorder float sums, so on a GPU only step 0 is required to match.)
    import torch

    if not torch.cuda.is_available():
        assert all(same_problems) and all(same_adapters), report
        assert [a[0] for a in killed["adapters"]] == [a[0] for a in clean["adapters"]], report
        assert [s[2:] for s in killed["solutions"]] == [s[2:] for s in clean["solutions"]], report
