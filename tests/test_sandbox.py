"""The sandbox contains hostile programs: real subprocesses, real limits, no mocks.

Each containment test also has a control (the same program with the layer switched
off, where that is harmless) so a broken wall makes the test fail rather than pass.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest
from pydantic import ValidationError

from minisir.sandbox import (
    SandboxConfig,
    TestCase,
    outputs_match,
    pass_table,
    probe,
    run_batch,
    run_program,
    run_tests,
)

FAST = SandboxConfig(timeout_s=3.0)
IS_ROOT = os.geteuid() == 0


def _live_in_group(pgid: int) -> list[int]:
    """Non-zombie processes whose process group is pgid."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pg = fields[0], int(fields[2])
        if pg == pgid and state not in ("Z", "X"):
            pids.append(int(name))
    return pids


def _wait_group_empty(pgid: int, seconds: float = 3.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        left = _live_in_group(pgid)
        if not left:
            return []
        time.sleep(0.05)
    return _live_in_group(pgid)


# --------------------------------------------------------------------------- correct programs
def test_correct_program_reads_stdin_and_passes_tests():
    code = "print(' '.join(reversed(input().split())))"
    tests = [TestCase("a b c\n", "c b a\n"), TestCase("hello world\n", "world hello"), TestCase("x\n", "y")]
    assert run_tests(code, tests, FAST) == [True, True, False]
    r = run_program("import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3\n4", FAST)
    assert r.ok and r.stdout == "10\n" and not r.timed_out and r.killed_reason is None


def test_exceptions_and_exit_codes_fail_tests():
    t = [TestCase("", "")]
    assert run_tests("raise ValueError('boom')", t, FAST) == [False]
    assert run_tests("import sys; sys.exit(3)", t, FAST) == [False]
    assert run_tests("print(", t, FAST) == [False]  # syntax error
    r = run_program("import sys; sys.exit(3)", "", FAST)
    assert r.exit_code == 3


def test_output_comparison_ignores_trailing_whitespace_only():
    assert outputs_match("1 2  \n3\n\n", "1 2\n3")
    assert outputs_match("a\r\nb\r\n", "a\nb")
    assert not outputs_match(" 1", "1")  # leading spaces matter
    assert not outputs_match("1\n\n2", "1\n2")  # inner blank lines matter
    assert not outputs_match("12", "1 2")


def test_large_stdin_and_stdlib_imports_work():
    code = "import sys, math, json, heapq, fractions, decimal, statistics\nprint(len(sys.stdin.read()))"
    r = run_program(code, "x" * 1_000_000, FAST)
    assert r.ok, r.stderr
    assert r.stdout.strip() == "1000000"


def test_empty_cwd_and_minimal_environment(monkeypatch):
    monkeypatch.setenv("MINISIR_FAKE_SECRET", "hunter2")
    r = run_program("import os\nprint(sorted(os.listdir('.')))\nprint(sorted(os.environ))", "", FAST)
    assert r.ok, r.stderr
    listing, env = r.stdout.splitlines()
    assert listing == "[]"
    assert "MINISIR_FAKE_SECRET" not in env and "hunter2" not in r.stdout
    assert set(eval(env)) <= {"PATH", "LANG", "LC_ALL", "HOME", "LC_CTYPE"}


def test_files_inside_cwd_are_allowed():
    r = run_program("open('a.txt', 'w').write('hi')\nprint(open('a.txt').read())", "", FAST)
    assert r.ok and r.stdout == "hi\n", r.stderr


# --------------------------------------------------------------------------- containment
def test_infinite_loop_is_killed_at_the_wall_clock_limit():
    cfg = SandboxConfig(timeout_s=1.0)
    r = run_program("while True:\n    pass", "", cfg)
    assert r.timed_out and r.killed_reason == "timeout"
    assert 0.9 <= r.seconds < 30  # not before its limit; far before "never"
    assert r.exit_code is not None and r.exit_code < 0
    assert _wait_group_empty(r.pid) == []


def test_sleeping_program_is_killed_too():
    r = run_program("import time\ntime.sleep(60)", "", SandboxConfig(timeout_s=1.0))
    assert r.timed_out and r.seconds < 30  # killed at its timeout, far before its own 60 s end


def test_fork_is_refused_by_the_audit_hook():
    bomb = "import os\nwhile True:\n    os.fork()"
    r = run_program(bomb, "", FAST)
    assert not r.ok and "sandbox: os.fork is not allowed" in r.stderr
    r = run_program("import subprocess\nsubprocess.run(['true'])", "", FAST)
    assert not r.ok and "not allowed" in r.stderr


def test_fork_bomb_is_bounded_by_rlimit_nproc_and_group_kill():
    """Audit hook OFF so the kernel limits do the work; bomb bounded to few processes."""
    cfg = SandboxConfig(timeout_s=1.5, audit_hook=False, max_processes=8)
    counting = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            os.close(1); os.close(2); time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "    print('unlimited', n)\n"
        "except OSError:\n"
        "    print('limited', n)\n"
    )
    r = run_program(counting, "", cfg)
    assert r.stdout.split()[0] == "limited", (r.stdout, r.stderr)
    assert int(r.stdout.split()[1]) < 8
    assert _wait_group_empty(r.pid) == []  # the sleeping children were killed with the group

    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t0 = time.monotonic()
    r = run_program(bomb, "", cfg)
    assert time.monotonic() - t0 < 30  # a bomb never ends: this only says it was stopped at all
    assert r.timed_out or r.killed_reason == "cpu_limit"
    assert _wait_group_empty(r.pid) == []


def test_huge_allocation_fails_fast_under_the_memory_limit():
    cfg = SandboxConfig(timeout_s=3.0, memory_mb=256)
    r = run_program("x = bytearray(4 * 1024 ** 3)\nprint('allocated')", "", cfg)
    assert not r.ok and r.killed_reason == "memory_limit" and "allocated" not in r.stdout
    assert not r.timed_out  # the limit stopped it, not the clock
    ok = run_program("x = bytearray(64 * 1024 ** 2)\nprint(len(x))", "", cfg)
    assert ok.ok and ok.stdout.strip() == str(64 * 1024**2)  # a modest allocation still works


def test_huge_output_is_cut_and_the_program_killed():
    cfg = SandboxConfig(timeout_s=3.0, max_output_bytes=4096)
    r = run_program("while True:\n    print('y' * 1000)", "", cfg)
    assert r.killed_reason == "output_limit" and not r.timed_out
    assert len(r.stdout) <= 4096
    r = run_program("import sys\nwhile True:\n    sys.stderr.write('e' * 1000)", "", cfg)
    assert r.killed_reason == "output_limit" and len(r.stderr) <= 4096


def test_big_files_are_cut_by_rlimit_fsize():
    cfg = SandboxConfig(timeout_s=3.0, max_file_bytes=1 << 16)
    r = run_program("open('big', 'wb').write(b'x' * (1 << 20))", "", cfg)
    assert not r.ok and r.killed_reason == "file_limit"


@pytest.fixture
def open_dir():
    """A world-writable directory OUTSIDE the sandbox cwd (like /tmp itself)."""
    d = tempfile.mkdtemp(prefix="minisir-target-")
    os.chmod(d, 0o777)
    yield d
    for name in os.listdir(d):
        os.remove(os.path.join(d, name))
    os.rmdir(d)


def test_write_outside_cwd_is_refused(open_dir):
    target = os.path.join(open_dir, "escaped.txt")
    for code in (
        f"open({target!r}, 'w').write('x')",
        f"import os\nfd = os.open({target!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
        f"import pathlib\npathlib.Path({target!r}).write_text('x')",
        f"open('../../{os.path.basename(open_dir)}/x', 'w')",  # same tmp root
        f"import os\nos.mkdir({os.path.join(open_dir, 'sub')!r})",
        f"import os\nos.chdir({open_dir!r})\nopen('escaped.txt', 'w').write('x')",
        f"import os\nos.symlink({target!r}, 'link')\nopen('link', 'w').write('x')",
    ):
        r = run_program(code, "", FAST)
        assert not r.ok and "sandbox:" in r.stderr, (code, r.stderr)
    assert os.listdir(open_dir) == []
    # control: without the audit hook a world-writable directory IS writable (documented)
    r = run_program(f"open({target!r}, 'w').write('x')", "", FAST.model_copy(update={"audit_hook": False}))
    assert r.ok and os.path.exists(target), r.stderr


@pytest.mark.skipif(not IS_ROOT, reason="privilege drop only happens when the parent is root")
def test_write_to_root_owned_dir_is_refused_by_the_kernel_without_the_hook():
    d = tempfile.mkdtemp(prefix="minisir-target-")
    os.chmod(d, 0o755)
    try:
        target = os.path.join(d, "escaped.txt")
        cfg = FAST.model_copy(update={"audit_hook": False})
        r = run_program(f"open({target!r}, 'w').write('x')", "", cfg)
        assert not r.ok and "Permission denied" in r.stderr and not os.path.exists(target)
        assert r.isolation["uid"] != 0
    finally:
        for name in os.listdir(d):
            os.remove(os.path.join(d, name))
        os.rmdir(d)


@pytest.fixture
def loopback_server():
    """A listener on 127.0.0.1 that any unsandboxed process could reach."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def _connect(port: int) -> str:
    return (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "print('connected')\n"
    )


def test_network_connection_is_blocked(loopback_server):
    r = run_program(_connect(loopback_server), "", FAST)
    assert not r.ok and "connected" not in r.stdout


def test_network_walls_each_hold_alone(loopback_server):
    code = _connect(loopback_server)
    # audit hook only
    r = run_program(code, "", FAST.model_copy(update={"network_namespace": False}))
    assert "connected" not in r.stdout and "sandbox:" in r.stderr
    # network namespace only
    r = run_program(code, "", FAST.model_copy(update={"audit_hook": False}))
    if not r.isolation.get("netns"):
        pytest.skip(f"no network namespace on this machine: {r.isolation.get('errors')}")
    assert "connected" not in r.stdout and "unreachable" in r.stderr.lower()
    # control: with both walls off the same program connects, so the checks above can fail
    r = run_program(code, "", FAST.model_copy(update={"audit_hook": False, "network_namespace": False}))
    assert r.ok and r.stdout.strip() == "connected", r.stderr


def test_probe_reports_isolation():
    info = probe(FAST)
    assert info["works"] and info["audit"] is True
    if IS_ROOT:
        assert info["uid"] != 0


# --------------------------------------------------------------------------- parallelism
def test_runs_in_parallel_up_to_concurrency():
    """Overlap, not seconds: with concurrency 4, every program starts before any of them ends."""
    cfg = SandboxConfig(timeout_s=30.0, concurrency=4)
    jobs = [(f"import time\nstart = time.time()\ntime.sleep(1.0)\nprint({i}, start, time.time())", "")
            for i in range(4)]
    results = run_batch(jobs, cfg)
    rows = [r.stdout.split() for r in results]
    assert [row[0] for row in rows] == ["0", "1", "2", "3"]  # job order kept
    starts, ends = [float(row[1]) for row in rows], [float(row[2]) for row in rows]
    assert max(starts) < min(ends), (starts, ends)  # serial runs would start after the previous ended


def test_pass_table_over_many_programs():
    tests = [TestCase(f"{i}\n", f"{i * 2}\n") for i in range(5)]
    codes = ["print(int(input()) * 2)", "x = int(input())\nprint(x * 2 if x < 3 else 0)", None, "print("]
    table = pass_table(codes, tests, SandboxConfig(concurrency=2))
    assert table == [[True] * 5, [True, True, True, False, False], [False] * 5, [False] * 5]


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValidationError):
        SandboxConfig(concurrency=0)
    with pytest.raises(ValidationError):
        SandboxConfig(timeout=3)  # extra field
