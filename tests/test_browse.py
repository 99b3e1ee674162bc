"""`minisir archive browse`: the real Datasette server on a loopback port, its canned queries'
JSON answers checked against the archive read with plain sqlite3 and computed here in Python.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from minisir.archive import Archive
from minisir.cli import main
from test_share_export import build_archive

def _rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        cur = conn.execute(sql, params)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextmanager
def serving(run_dir: Path) -> Iterator[str]:
    """`minisir archive browse RUN --no-open` in a subprocess; yields its base URL; always stopped."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "minisir", "archive", "browse", str(run_dir), "--port", str(port),
                             "--no-open"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}): {proc.stdout.read()}")
            try:
                if _get(base, "/-/versions.json")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 90 s"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(base: str, name: str, **params) -> list[dict]:
    from urllib.parse import urlencode

    status, body = _get(base, f"/archive/{name}.json?" + urlencode({**params, "_shape": "array"}))
    assert status == 200, (name, status, body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("browse") / "run"
    build_archive(run)
    with Archive.open(run) as arc:
        for step, bench, p1 in ((None, "arithmetic-easy", 0.15), (1, "arithmetic-easy", 0.25), (1, "gsm8k-100", 0.05)):
            arc.add_eval(step, bench, {"n_questions": 40, "pass@1": p1, "pass@1_ci": [p1 - 0.05, p1 + 0.05],
                                       "maj@k": p1, "greedy": p1, "config": {"k": 4, "seed": 0, "temperature": 0.6}})
    return run


def test_canned_queries_answer_what_the_archive_holds(run_dir):
    db = run_dir / "archive.sqlite"
    before = db.read_bytes()
    problems = _rows(db, "SELECT * FROM problems")
    solutions = _rows(db, "SELECT * FROM solutions")
    by_id = {p["id"]: p for p in problems}
    with serving(run_dir) as base:
        # the best problems: valid, scored, highest reward first
        best = _query(base, "best_problems")
        scored = sorted((p for p in problems if p["valid"] and p["teacher_reward"] is not None),
                        key=lambda p: (-p["teacher_reward"], p["id"]))
        assert [r["id"] for r in best] == [p["id"] for p in scored] and len(best) >= 3
        for r in best:
            assert r["text"] == by_id[r["id"]]["text"]
            assert r["label"] == (by_id[r["id"]]["label"] if by_id[r["id"]]["label_source"]
                                  else by_id[r["id"]]["majority_answer"])

        # lineage: the deepest problem up to the seed
        def chain(pid):
            out = [pid]
            while by_id[out[-1]]["parent_id"] is not None:
                out.append(by_id[out[-1]]["parent_id"])
            return out

        deepest = max(by_id, key=lambda pid: len(chain(pid)))
        assert len(chain(deepest)) == 4
        lineage = _query(base, "lineage", id=deepest)
        assert [r["id"] for r in lineage] == chain(deepest)
        assert [r["depth"] for r in lineage] == list(range(4)) and lineage[-1]["role"] == "seed"

        # a problem's votes and solutions
        for pid in {s["problem_id"] for s in solutions}:
            mine = [s for s in solutions if s["problem_id"] == pid]
            votes = Counter(s["answer"] for s in mine)
            got = _query(base, "problem_solutions", id=pid)
            assert sorted(r["id"] for r in got) == sorted(s["id"] for s in mine)
            assert all(r["votes"] == votes[r["answer"]] for r in got)
            assert [r["votes"] for r in got] == sorted((r["votes"] for r in got), reverse=True)

        # one step's groups: each problem of the step with its student group
        for step in (0, 1):
            got = {r["id"]: r for r in _query(base, "step_groups", step=step)}
            assert set(got) == {p["id"] for p in problems if p["step"] == step}
            for pid, r in got.items():
                rewards = [s["reward"] for s in solutions if s["problem_id"] == pid]
                assert r["solutions"] == len(rewards)
                if rewards:
                    assert r["student_reward_mean"] == pytest.approx(sum(rewards) / len(rewards))
                    assert r["agreeing"] == sum(s["agrees"] for s in solutions if s["problem_id"] == pid)

        # the label audit: steps with an executed answer, share of right votes
        audited = {}
        for pid, p in by_id.items():
            if p["majority_correct"] is not None:
                audited.setdefault(p["step"], []).append(bool(p["majority_correct"]))
        got = _query(base, "label_audit")
        assert {r["step"]: (r["audited"], r["vote_right"]) for r in got} == \
            {s: (len(v), sum(v)) for s, v in audited.items()}
        assert all(r["label_precision"] == pytest.approx(sum(audited[r["step"]]) / len(audited[r["step"]])) for r in got)

        # the eval records of a comparison
        evals = _rows(db, "SELECT * FROM evals")
        got = _query(base, "eval_comparison", benchmark="arithmetic-easy")
        want = [e for e in evals if e["benchmark"] == "arithmetic-easy"]
        assert [r["id"] for r in got] == [e["id"] for e in want] and len(got) == 2
        assert [r["model"] for r in got] == ["base" if e["step"] is None else f"step {e['step']}" for e in want]
        assert [r["pass_at_1"] for r in got] == [json.loads(e["metrics"])["pass@1"] for e in want]
        assert len(_query(base, "eval_comparison", benchmark="")) == len(evals)
    assert db.read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["archive.sqlite"]  # immutable: no -wal/-shm


def test_every_column_described_and_embeddings_hidden(run_dir):
    db = run_dir / "archive.sqlite"
    with serving(run_dir) as base:
        meta = json.loads(_get(base, "/-/metadata.json")[1])["databases"]["archive"]["tables"]
        tables = [r["name"] for r in _rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            assert meta[table]["description"], table
            for col in _rows(db, f"PRAGMA table_info({table})"):
                assert meta[table]["columns"].get(col["name"]), f"{table}.{col['name']} is not described"

        rows = json.loads(_get(base, "/archive/problems.json?_shape=array")[1])
        assert rows and all("embedding" not in r and "text" in r for r in rows)
        picked = json.loads(_get(base, "/archive/problems.json?_shape=array&_col=embedding")[1])
        assert any(r["embedding"] for r in picked)  # still there when asked for
        pid = next(r["id"] for r in _rows(db, "SELECT id FROM problems WHERE embedding IS NOT NULL"))
        page = _get(base, f"/archive/problems/{pid}")[1]
        assert "3 floats, hidden" in page and "Tom has 3 pens" in page


def test_user_mistakes_are_one_line(tmp_path, monkeypatch):
    missing = CliRunner().invoke(main, ["archive", "browse", str(tmp_path / "nowhere"), "--no-open"])
    assert missing.exit_code == 2 and "nowhere" in missing.stderr and missing.stderr.count("\n") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "archive.sqlite").write_bytes(b"garbage " * 100)
    bad = CliRunner().invoke(main, ["archive", "browse", str(broken), "--no-open"])
    assert bad.exit_code == 2 and "not an SQLite file" in bad.stderr and bad.stderr.count("\n") == 1
    build_archive(tmp_path / "run")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(main, ["archive", "browse", str(tmp_path / "run"), "--port", str(port), "--no-open"])
    assert busy.exit_code == 2 and f"port {port}" in busy.stderr and busy.stderr.count("\n") == 1
    monkeypatch.setitem(sys.modules, "datasette", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "datasette.app", None)
    absent = CliRunner().invoke(main, ["archive", "browse", str(tmp_path / "run"), "--no-open"])
    assert absent.exit_code == 2 and absent.stderr.count("\n") == 1
    assert "pip install 'minisir[browse]'" in absent.stderr


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise AssertionError("no headless Chromium: install Debian's `chromium` package (apt-get install chromium)")


@pytest.mark.slow
@pytest.mark.browser
def test_problem_page_renders_in_chromium(run_dir, tmp_path):
    browser = _chromium()  # fails, not skips: this test is opt-in (-m browser) and exists to run the browser
    pid, text = next((r["id"], r["text"]) for r in _rows(run_dir / "archive.sqlite",
                                                        "SELECT id, text FROM problems WHERE text LIKE '%€%'"))
    with serving(run_dir) as base:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                              "--dump-dom", f"{base}/archive/problems/{pid}"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert text in dom.stdout
