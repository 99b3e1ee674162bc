"""Run untrusted, model-written Python programs (SQLM coding topic).

Every program runs in its own process, started as
``python -I -S -B -c <launcher> <json>`` in a fresh empty temporary directory with a
minimal environment (PATH, LANG, HOME=cwd; no inherited variables, so no secrets) and
its own session/process group. The launcher is trusted code that runs first inside the
child, sets up the walls below, then executes the program as ``__main__``. Doing the
setup in the launcher rather than in ``preexec_fn`` keeps process creation safe while
many runs start from a thread pool (``preexec_fn`` is documented as unsafe with threads).

What is enforced, layer by layer (``RunResult.isolation`` reports what a run achieved):

Hard (kernel) limits, always:
- wall clock: the parent kills the whole process group (SIGKILL) at ``timeout_s``, and
  also kills the group after every normal exit so no straggler survives the run;
- RLIMIT_CPU (ceil(timeout_s) + 1, hard +1), RLIMIT_AS (``memory_mb``), RLIMIT_NPROC
  (``max_processes``; a fork bomb hits it), RLIMIT_FSIZE (``max_file_bytes``),
  RLIMIT_NOFILE (``max_open_files``), RLIMIT_CORE 0; soft = hard, so they cannot be raised;
- bounded output: stdout and stderr are read incrementally and the group is killed as
  soon as either exceeds ``max_output_bytes``.

Hard, when the machine allows it:
- no network: the launcher calls unshare(CLONE_NEWNET) (as root) or
  unshare(CLONE_NEWUSER | CLONE_NEWNET) (unprivileged user namespaces). The new
  namespace has only a loopback device that is down, so even 127.0.0.1 is unreachable.
  ``require_network_isolation=True`` refuses to run programs when this fails.
- privilege drop: when the parent runs as root (RLIMIT_NPROC is not enforced for root),
  the child switches to ``nobody`` (or ``run_as_uid``) with no supplementary groups.
  File permissions then stop writes to root-owned or other users' files, and the
  temporary root of each run is 0700 root-only, so runs cannot see each other.

Best effort (Python level), when ``audit_hook`` is on: a ``sys.addaudithook`` hook,
installed before the program runs and not removable from Python, refuses sockets,
process creation (fork, exec, spawn, subprocess, os.system), signals to other
processes, ctypes and ``_posixsubprocess``, rlimit changes, chdir, links, gc object
walks, file writes/renames/removals/mkdir/chmod outside the working directory, and
reads outside the working directory and the standard library. This is what stops
writes to world-writable places such as /tmp, and the network when no namespace can be
made. It defeats naive or accidental misuse (what a small model writes), not a
determined attacker with a C-level exploit; the kernel layers above are the walls.

Interpreter: programs run on the running interpreter, except when privileges are dropped
and its standard library is not readable by the sandbox user (e.g. pyenv under a 0700
/root): then the first python3 on /usr/local/bin:/usr/bin:/bin that can import the
stdlib as that user is used (checked once per process, see probe()).

Not enforced: a separate filesystem view (no mount namespace / chroot), so C code paths
that raise no audit event (e.g. dbm) can still read files the sandbox user may read and
write where it may write (world-writable directories when privileges were dropped; the
user's own files otherwise); CPU share (programs run at normal priority); no PID
namespace, so a child that left the process group with setsid() (possible only after
bypassing the hook's fork ban) survives the group kill, bounded by RLIMIT_CPU/AS/NPROC.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

SETUP_FAILED_EXIT = 71  # launcher exit code when a required wall could not be built


class SandboxConfig(BaseModel):
    """sandbox: limits for running model-written programs."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(4.0, gt=0, le=300, description="wall-clock limit per run, interpreter start included")
    memory_mb: int = Field(512, ge=64, le=65536, description="address-space limit (RLIMIT_AS)")
    max_output_bytes: int = Field(65536, ge=1024, le=64 * 1024 * 1024, description="per stream; killed when exceeded")
    max_file_bytes: int = Field(1 << 20, ge=0, le=1 << 30, description="largest file the program may write")
    max_processes: int = Field(
        64, ge=1, le=4096, description="RLIMIT_NPROC; counts all processes of the sandbox user, keep > concurrency"
    )
    max_open_files: int = Field(64, ge=16, le=4096)
    concurrency: int = Field(2, ge=1, le=256, description="programs run at the same time")
    network_namespace: bool = Field(True, description="try an empty network namespace")
    require_network_isolation: bool = Field(False, description="refuse to run when no network namespace can be made")
    drop_privileges: bool = Field(True, description="when running as root, run programs as run_as_uid")
    run_as_uid: int | None = Field(None, ge=1, description="uid for programs when root; default: nobody")
    audit_hook: bool = True
    python: str | None = Field(None, description="interpreter; default: the running one")


@dataclass
class TestCase:
    """One proposer-written test: feed stdin, expect stdout (compared per line, trailing spaces ignored)."""

    __test__ = False  # not a pytest class

    stdin: str
    expected_stdout: str


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None  # negative = killed by that signal
    timed_out: bool
    killed_reason: str | None  # timeout | output_limit | cpu_limit | memory_limit | file_limit | signal:NAME | setup_failed
    seconds: float
    isolation: dict = field(default_factory=dict)  # what the launcher achieved: netns, uid, audit, errors
    pid: int | None = None  # also the process-group id of the run

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


# --------------------------------------------------------------------------- launcher
# Runs inside the child before the program (sandbox_launcher.py, a real module the linter reads).
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")


# --------------------------------------------------------------------------- parent side
def _sandbox_ids(cfg: SandboxConfig) -> tuple[int, int] | None:
    """(uid, gid) to switch to, or None when not root / disabled."""
    if os.geteuid() != 0 or not cfg.drop_privileges:
        return None
    if cfg.run_as_uid is not None:
        return cfg.run_as_uid, cfg.run_as_uid
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _limits(cfg: SandboxConfig) -> dict[str, list[int]]:
    # A backstop one second above the wall clock: at exactly timeout_s the two limits raced, and a
    # single-threaded loop was sometimes reported as cpu_limit instead of timeout.
    cpu = math.ceil(cfg.timeout_s) + 1
    mem = cfg.memory_mb * 1024 * 1024
    return {
        "RLIMIT_CORE": [0, 0],
        "RLIMIT_CPU": [cpu, cpu + 1],
        "RLIMIT_AS": [mem, mem],
        "RLIMIT_FSIZE": [cfg.max_file_bytes, cfg.max_file_bytes],
        "RLIMIT_NOFILE": [cfg.max_open_files, cfg.max_open_files],
        "RLIMIT_NPROC": [cfg.max_processes, cfg.max_processes],
    }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(pid: int) -> bool:
    """True once pid has exited, WITHOUT reaping it (so its pid/pgid cannot be reused yet)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _rmtree(path: str) -> None:
    def onerror(func, p, exc):  # a program may chmod its own files 000
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Feed stdin, collect at most `cap` bytes per stream; stop at the deadline or the cap."""
    out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    sel = selectors.DefaultSelector()
    reason = None
    try:
        for fd in out:
            sel.register(fd, selectors.EVENT_READ)
        in_fd = proc.stdin.fileno()
        if data:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        view, pos = memoryview(data), 0
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(out[proc.stdout.fileno()]), bytes(out[proc.stderr.fileno()]), "timeout"
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pos += os.write(fd, view[pos : pos + 65536])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        pos = len(data)
                    if pos >= len(data):
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = out[fd]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    reason = "output_limit"
                    return bytes(out[proc.stdout.fileno()]), bytes(out[proc.stderr.fileno()]), reason
        # Both streams closed: the program is exiting (or detached them); wait for it.
        while not _exited(proc.pid):
            if time.monotonic() >= deadline:
                reason = "timeout"
                break
            time.sleep(0.002)
        return bytes(out[proc.stdout.fileno()]), bytes(out[proc.stderr.fileno()]), reason
    finally:
        sel.close()


def _classify(code: int | None, stderr: str) -> str | None:
    if code is None or code == 0:
        return None
    if code == SETUP_FAILED_EXIT and stderr.startswith("sandbox setup failed"):
        return "setup_failed"
    if code < 0:
        sig = -code
        if sig == signal.SIGXCPU:
            return "cpu_limit"
        if sig == signal.SIGXFSZ:
            return "file_limit"
        try:
            return "signal:" + signal.Signals(sig).name
        except ValueError:
            return f"signal:{sig}"
    tail = stderr[-400:]
    if "MemoryError" in tail:
        return "memory_limit"
    if "File too large" in tail:
        return "file_limit"
    return None


_PYTHON_CACHE: dict[tuple, str] = {}
_PYTHON_LOCK = threading.Lock()
_PROBE_CODE = "import math, json, decimal, fractions, heapq, bisect, re, random, statistics, datetime\nprint('ok')"


def _interpreter(cfg: SandboxConfig) -> str:
    """The interpreter for programs; checked once per process when privileges are dropped.

    A root-owned install under a 0700 directory (e.g. pyenv in /root) starts fine as root,
    but the stdlib extension modules cannot be imported after the switch to `nobody`.
    Then the first interpreter on a system path that works for that user is used.
    """
    if cfg.python:
        return cfg.python
    ids = _sandbox_ids(cfg)
    if ids is None:
        return sys.executable
    key = (ids, cfg.network_namespace, cfg.audit_hook)
    with _PYTHON_LOCK:
        if key in _PYTHON_CACHE:
            return _PYTHON_CACHE[key]
        candidates = [sys.executable]
        for name in ("python3", f"python3.{sys.version_info.minor}"):
            found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
            if found and found not in candidates:
                candidates.append(found)
        probe_cfg = cfg.model_copy(update={"timeout_s": max(cfg.timeout_s, 10.0)})
        chosen = sys.executable
        for python in candidates:
            r = _run(_PROBE_CODE, "", probe_cfg, python)
            if r.ok and r.stdout.strip() == "ok":
                chosen = python
                break
            log.info("sandbox: %s cannot import the stdlib as uid %s: %s", python, ids[0], r.stderr.strip()[-200:])
        else:
            log.warning("sandbox: no interpreter can import the stdlib as uid %s; programs may fail on imports", ids[0])
        _PYTHON_CACHE[key] = chosen
        return chosen


def run_program(code: str, stdin: str = "", cfg: SandboxConfig | None = None) -> RunResult:
    """Run one untrusted program on `stdin` inside the sandbox (see module docstring)."""
    cfg = cfg or SandboxConfig()
    return _run(code, stdin, cfg, _interpreter(cfg))


def _run(code: str, stdin: str, cfg: SandboxConfig, python: str) -> RunResult:
    root = tempfile.mkdtemp(prefix="minisir-sbx-")  # 0700: only the parent's user
    status_r = status_w = -1
    try:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        program = os.path.join(root, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(code)
        ids = _sandbox_ids(cfg)
        if ids is not None:
            os.chown(work, ids[0], ids[1])
        status_r, status_w = os.pipe()
        launch = {
            "program": program,
            "status_fd": status_w,
            "uid": ids[0] if ids else None,
            "gid": ids[1] if ids else None,
            "netns": cfg.network_namespace,
            "require_netns": cfg.require_network_isolation,
            "audit": cfg.audit_hook,
            "limits": _limits(cfg),
        }
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": work}
        argv = [python, "-I", "-S", "-B", str(LAUNCHER), json.dumps(launch)]
        start = time.monotonic()
        deadline = start + cfg.timeout_s
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work,
            env=env,
            start_new_session=True,
            pass_fds=(status_w,),
            close_fds=True,
        )
        os.close(status_w)
        status_w = -1
        try:
            out, err, reason = _communicate(proc, stdin.encode("utf-8", "surrogateescape"), deadline, cfg.max_output_bytes)
        finally:
            # Kill the group BEFORE reaping the leader: an unreaped leader keeps the
            # pgid from being reused, so this can never hit an unrelated process.
            _kill_group(proc.pid)
            proc.wait()
            for s in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    s.close()
                except (OSError, ValueError):
                    pass
        seconds = time.monotonic() - start
        status = b""
        os.set_blocking(status_r, False)
        try:
            while chunk := os.read(status_r, 4096):
                status += chunk
        except BlockingIOError:
            pass
        try:
            isolation = json.loads(status) if status else {}
        except json.JSONDecodeError:
            isolation = {}
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        exit_code = proc.returncode
        killed = reason or _classify(exit_code, stderr)
        return RunResult(stdout, stderr, exit_code, reason == "timeout", killed, seconds, isolation, proc.pid)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        _rmtree(root)


def run_batch(jobs: Sequence[tuple[str, str]], cfg: SandboxConfig | None = None) -> list[RunResult]:
    """Run (code, stdin) jobs, up to cfg.concurrency at a time; results in job order."""
    cfg = cfg or SandboxConfig()
    if not jobs:
        return []
    workers = min(cfg.concurrency, len(jobs))
    if workers == 1:
        return [run_program(c, s, cfg) for c, s in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda job: run_program(job[0], job[1], cfg), jobs))


def normalize_output(text: str) -> list[str]:
    """Lines with trailing whitespace stripped and trailing blank lines dropped."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def outputs_match(actual: str, expected: str) -> bool:
    return normalize_output(actual) == normalize_output(expected)


def passed(result: RunResult, test: TestCase) -> bool:
    """A test passes when the program exited cleanly and printed the expected output."""
    return result.ok and outputs_match(result.stdout, test.expected_stdout)


def run_tests(code: str, tests: Sequence[TestCase], cfg: SandboxConfig | None = None) -> list[bool]:
    """Pass/fail of `code` on each test, run in parallel."""
    results = run_batch([(code, t.stdin) for t in tests], cfg)
    return [passed(r, t) for r, t in zip(results, tests)]


def pass_table(
    codes: Sequence[str | None], tests: Sequence[TestCase], cfg: SandboxConfig | None = None
) -> list[list[bool]]:
    """Per program, pass/fail on every test; all programs x tests share one pool.

    A None program (nothing extracted) fails every test without running.
    """
    jobs = [(c, t.stdin) for c in codes if c is not None for t in tests]
    results = iter(run_batch(jobs, cfg))
    table: list[list[bool]] = []
    for c in codes:
        if c is None:
            table.append([False] * len(tests))
        else:
            table.append([passed(next(results), t) for t in tests])
    return table


def probe(cfg: SandboxConfig | None = None) -> dict:
    """What the sandbox achieves on this machine (for `minisir doctor` and logs)."""
    cfg = cfg or SandboxConfig()
    python = _interpreter(cfg)
    r = _run(_PROBE_CODE, "", cfg, python)
    return {"works": r.ok and r.stdout.strip() == "ok", "python": python, **r.isolation}
