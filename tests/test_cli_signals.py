"""`minisir run` stops cleanly on SIGTERM/SIGINT from its first moment, not only once the loop runs.

As PID 1 in a container (`docker stop`) a process has no default action for SIGTERM: without its
own handler it would ignore the signal until the loop installed one, and be SIGKILLed 10 s later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_run import write_recipe

ROOT = Path(__file__).resolve().parent.parent


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (Linux /proc SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see the handler")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_before_the_model_loads_stops_cleanly(tmp_path, sig):
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, steps=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "minisir.cli", "run", str(recipe)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # SIGTERM has no Python handler by default: once one is installed, `minisir run` has started.
        while not _catches(proc.pid, signal.SIGTERM):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 30, "minisir run never installed a SIGTERM handler"
            time.sleep(0.005)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert f"stopped cleanly; resume with: minisir run {recipe}" in err
    assert "Traceback" not in err and "interrupted" not in err
    archive = run_dir / "archive.sqlite"
    if archive.exists():  # the signal came after the archive was opened: no step may be there
        import sqlite3

        with sqlite3.connect(f"file:{archive}?mode=ro", uri=True) as conn:
            assert conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 0
    assert not (run_dir / "adapters").exists()


def test_stop_inside_the_loop_gives_the_same_message_and_closes_the_runner(tmp_path, monkeypatch):
    """The loop's own stop (StopRequested at a phase end) ends the same way, runner closed."""
    from click.testing import CliRunner

    import minisir.loop
    from minisir.cli import main

    closed = []

    class StoppingRunner:
        def __init__(self, cfg, **options):
            self.archive = None

        def run(self, steps):
            raise minisir.loop.StopRequested("stopped before train")

        def close(self, failed=False):
            closed.append(failed)

    monkeypatch.setattr(minisir.loop, "Runner", StoppingRunner)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", steps=2)
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["run", str(recipe), "--set", "run.steps=3"])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == f"stopped cleanly; resume with: minisir run {recipe} --set run.steps=3"
    assert closed == [True]  # closed once, as a run that ended mid-step (no rank barrier)
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler is gone again
