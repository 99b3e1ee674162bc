"""The CPU image, built and run: the quickstart in a container, killed mid-step, resumed.

Builds `minisir:cpu` with scripts/docker-build.sh (BuildKit's layer cache makes a rebuild of
unchanged sources quick), then, with the run directory on a volume and no network:
- `docker kill` (SIGKILL) lands while a step is in flight, after at least one commit;
- the same `docker run` again resumes and finishes; every row committed before the kill is
  still there, unchanged, and the run dir passes the same invariants as the crash tests;
- `docker stop` (SIGTERM to PID 1) as soon as the loop's progress bar shows, before a step commits,
  stops the container with minisir's own exit code 130, not the stop timeout's SIGKILL (137).

Needs a Docker daemon; skipped without one. The build's optional inputs come from the
environment as scripts/docker-build.sh reads them (CPU_BASE, CA_BUNDLE); the wheelhouse is the
torch wheel this machine's pip resolves, so the image installs the same torch as setup.sh.
About 30 minutes from cold on 2 CPU cores (most of it compiling llama.cpp), 8 minutes warm.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tiny_run import check_committed, read_run

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("MINISIR_DOCKER_IMAGE", "minisir:cpu")
STEPS = 3


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    if not _docker_ok():
        pytest.skip("no Docker daemon (docker info fails)")
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    torch_spec = os.environ.get("TORCH_SPEC", "torch==2.13.0")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheelhouse), torch_spec],
                   check=True)
    env = dict(os.environ, FLAVOR="cpu", TAG=IMAGE, WHEELHOUSE=str(wheelhouse))
    subprocess.run([str(ROOT / "scripts" / "docker-build.sh")], check=True, env=env, cwd=ROOT)
    return IMAGE


def _run_args(name: str, volume: Path, image: str, steps: int) -> list[str]:
    return ["docker", "run", "--name", name, "--network", "none", "-v", f"{volume}:/runs", image,
            "run", "recipes/opensir-tiny.yaml", "--set", "run.dir=/runs/quick", "--set", f"run.steps={steps}"]


def _committed_steps(run_dir: Path) -> int:
    db = run_dir / "archive.sqlite"
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not there yet
        return 0


def _wait(proc: subprocess.Popen, until, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not until():
        assert proc.poll() is None, f"container exited ({proc.returncode}) before {what}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(2)


def _rm(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_killed_container_resumes_without_losing_commits(image, tmp_path):
    volume = tmp_path / "runs"
    volume.mkdir()
    run_dir = volume / "quick"
    name = f"minisir-test-{uuid.uuid4().hex[:8]}"
    log = (tmp_path / "first.log").open("wb")
    proc = subprocess.Popen(_run_args(name, volume, image, STEPS), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(proc, lambda: _committed_steps(run_dir) >= 1, 1800, "the first commit")
        time.sleep(5)  # into the next step: sampling has started, nothing of it is committed
        before = read_run(run_dir)
        assert len(before["steps"]) < STEPS, "the run finished before it could be killed; raise STEPS"
        subprocess.run(["docker", "kill", name], check=True, capture_output=True)
        assert proc.wait(timeout=120) == 137, "docker kill must end the container with SIGKILL"
    finally:
        if proc.poll() is None:
            proc.kill()
        _rm(name)
    killed = check_committed(run_dir, len(before["steps"]))
    assert killed["problems"] == before["problems"] and killed["solutions"] == before["solutions"]

    again = subprocess.run(_run_args(name, volume, image, STEPS), capture_output=True, text=True)
    _rm(name)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming /runs/quick at step" in again.stdout + again.stderr
    after = check_committed(run_dir, STEPS)
    n = len(before["problems"])
    assert after["problems"][:n] == before["problems"], "a committed problem changed or vanished"
    assert after["solutions"][:len(before["solutions"])] == before["solutions"]
    assert after["adapters"][:len(before["adapters"])] == before["adapters"]


def test_docker_stop_exits_cleanly_before_a_commit(image, tmp_path):
    volume = tmp_path / "runs"
    volume.mkdir()
    name = f"minisir-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(_run_args(name, volume, image, 1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                             capture_output=True, text=True).stdout.strip() != "true":
            assert time.monotonic() < end, "container did not start"
            time.sleep(0.2)
        # The loop's progress bar: printed after the CLI's handler is in (an import-time warning is not).
        while "steps:" not in subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr:
            assert time.monotonic() < end + 300, "minisir's loop did not start"
            time.sleep(0.2)
        subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        _rm(name)
    assert proc.returncode == 130, f"exit {proc.returncode} (137 = SIGTERM ignored until the stop timeout):\n" \
        + out.decode(errors="replace")[-2000:]
    assert _committed_steps(volume / "quick") == 0
