"""Live tracking (run.report_to): what TensorBoard, W&B, trackio and MLflow receive, read back
with each tracker's own reader and compared with the archive read with sqlite3.

The end-to-end fixture is one real tiny run with all four trackers, SIGKILLed after its first
step and resumed; in the resumed process the TensorBoard event file is swapped for /dev/full
after step 1, so its next write fails with a real "no space left on device": the run must warn
once, drop TensorBoard and finish with the other three. W&B runs offline, trackio writes to a
temporary TRACKIO_DIR, MLflow to a temporary file store. Fast tests need no model.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from minisir.archive import Archive
from minisir.errors import MinisirError
from minisir.trackers import Trackers, RunInfo, TABLE
from tiny_run import TINY

TESTS = Path(__file__).resolve().parent
ALL = ["tensorboard", "wandb", "trackio", "mlflow"]
EVAL = {"benchmark": "arithmetic", "n_questions": 2, "k": 1, "max_tokens": 16, "greedy": False}


# --------------------------------------------------------------------------- readers (the trackers' own)
def tb_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (purged steps removed)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0, TENSORS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tb_texts(log_dir: Path) -> dict[int, str]:
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={TENSORS: 0})
    acc.Reload()
    tag = f"{TABLE}/text_summary"
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)} if tag in acc.Tags()["tensors"] else {}


def wandb_records(path: Path) -> list:
    """The records of one .wandb file (W&B's own protobufs; the file is LevelDB's log format:
    32 KiB blocks of chunks with a 7-byte header, after the 7-byte ':W&B' file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunks, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if (kind == 0 and length == 0) or pos + length > len(data):  # the end, or a record being written
            break
        chunks += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunks)
            out.append(record)
            chunks = b""
    return out


def wandb_history(run_dir: Path) -> tuple[set[str], list[dict]]:
    """(run ids, history rows) of every offline W&B run under RUN/wandb, oldest first."""
    ids, rows = set(), []
    for f in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        for record in wandb_records(Path(f)):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
            elif kind == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return ids, rows


# --------------------------------------------------------------------------- the archive, read with sqlite3
def archive_steps(run_dir: Path) -> dict[int, dict]:
    conn = sqlite3.connect(f"{(run_dir / 'archive.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        steps = {s: json.loads(m) for s, m in conn.execute("SELECT step, metrics FROM steps ORDER BY step")}
        # the base model's eval (step NULL) starts the held-out curve; it is no step's and goes to no tracker
        for step, bench, metrics in conn.execute("SELECT step, benchmark, metrics FROM evals WHERE step IS NOT NULL"):
            # an in-run eval's numbers go out as eval/BENCHMARK/METRIC, @ spelled _at_ (MLflow allows no @)
            steps[step].update({f"eval/{bench}/{k.replace('@', '_at_')}": v for k, v in json.loads(metrics).items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith("_ci")})
        return steps
    finally:
        conn.close()


def archive_meta(run_dir: Path, key: str) -> str:
    conn = sqlite3.connect(f"{(run_dir / 'archive.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
    finally:
        conn.close()


def valid_problem_texts(run_dir: Path, step: int) -> set[str]:
    conn = sqlite3.connect(f"{(run_dir / 'archive.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {t for (t,) in conn.execute("SELECT text FROM problems WHERE step = ? AND valid = 1", (step,))}
    finally:
        conn.close()


def numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


# --------------------------------------------------------------------------- one real run, killed and resumed
def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "WANDB_CACHE_DIR": str(root / "wandb-cache"), "WANDB_DATA_DIR": str(root / "wandb-data"),
            "WANDB_CONFIG_DIR": str(root / "wandb-config"), "TRACKIO_DIR": str(root / "trackio"),
            "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}


def _wait_for(proc: subprocess.Popen, log: Path, what: str, done, timeout: float = 1500) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"the run ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.2)


# tests/forced_cli.py whose step 1 never ends by itself (it sleeps before sampling), so the kill of
# the first process always lands inside step 1, however long W&B and trackio take to write step 0.
_STALLED_CLI = """
import sys, time, types
sys.path.insert(0, {tests!r})
from tiny_run import force_valid_problem
from minisir.methods import opensir
force_valid_problem(types.SimpleNamespace(setattr=setattr))
forced = opensir.play
def play(runner, step, phase, round_=0):
    if step >= 1:
        time.sleep(3600)
    return forced(runner, step, phase, round_)
opensir.play = play
from minisir.cli import main
main(sys.argv[1:], prog_name="minisir")
"""


def _printed(log: Path, text: str):
    return lambda: text in log.read_text(errors="replace")


def _trackers_have_step_0(root: Path):
    """W&B and trackio write in the background: a kill loses what they had not written yet
    (never a duplicate), so the first process is killed once both have step 0 on disk."""

    def done() -> bool:
        _, rows = wandb_history(root / "run")
        db = root / "trackio" / "minisir.db"
        if not rows or not db.exists():
            return False
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            return bool(conn.execute("SELECT 1 FROM metrics WHERE step = 0").fetchone())
        except sqlite3.Error:  # the database is being created
            return False
        finally:
            conn.close()

    return done


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    """Three steps with every tracker: killed (SIGKILL) during step 1, resumed; TensorBoard's disk
    fills up after step 1 of the resumed process. Every round has a known valid problem
    (tests/forced_cli.py), so each step has a top-problems table; the first process's step 1
    stalls until the kill (_STALLED_CLI)."""
    root = tmp_path_factory.mktemp("tracked")
    run_dir = root / "run"
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"].update({"dir": str(run_dir), "steps": 3, "eval_every": 2, "report_to": ALL})
    data["eval"] = EVAL
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    cmd, env = [sys.executable, str(TESTS / "forced_cli.py"), "run", str(recipe)], _env(root)
    first, second = root / "first.log", root / "second.log"

    stalled = [sys.executable, "-c", _STALLED_CLI.format(tests=str(TESTS)), "run", str(recipe)]
    proc = subprocess.Popen(stalled, stdout=first.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(proc, first, "step 0", _printed(first, "step 0:"))  # printed after the trackers got step 0
        _wait_for(proc, first, "step 0 in W&B and trackio", _trackers_have_step_0(root), timeout=120)
        proc.send_signal(signal.SIGKILL)  # killed inside step 1
        proc.wait()
        assert sorted(archive_steps(run_dir)) == [0]

        proc = subprocess.Popen(cmd, stdout=second.open("wb"), stderr=subprocess.STDOUT, env=env)
        _wait_for(proc, second, "step 1", _printed(second, "step 1:"))
        # The resumed process's event file (TensorBoard appends by path): its next write gets ENOSPC.
        newest = Path(max(glob.glob(str(run_dir / "tb" / "events.out.tfevents.*")), key=os.path.getmtime))
        kept = newest.rename(root / newest.name)
        newest.symlink_to("/dev/full")
        assert proc.wait(timeout=1500) == 0, second.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    newest.unlink()  # the readers below see what TensorBoard had written before the disk filled
    kept.rename(newest)
    return {"run_dir": run_dir, "root": root, "steps": archive_steps(run_dir), "second": second.read_text()}


def test_the_run_resumed_and_finished(tracked):
    assert sorted(tracked["steps"]) == [0, 1, 2]
    assert any(k.startswith("eval/arithmetic/") for k in tracked["steps"][1]), "step 1 was evaluated"


def test_a_tracker_failing_mid_run_warns_once_and_the_run_goes_on(tracked):
    out = tracked["second"]
    warnings = [line for line in out.splitlines() if "tensorboard failed" in line]
    assert len(warnings) == 1, out[-3000:]
    assert "step 2" in warnings[0] and "No space left on device" in warnings[0]
    assert "Traceback" not in out
    assert "step 2:" in out  # the step after the failure ran and was committed


def test_tensorboard_has_each_committed_step_once(tracked):
    run_dir, steps = tracked["run_dir"], tracked["steps"]
    scalars = tb_scalars(run_dir / "tb")
    # steps 0 (first process) and 1 (resumed process); the disk was full for step 2
    expected = {k for s in (0, 1) for k in numeric(steps[s])}
    assert set(scalars) == expected
    for tag, points in scalars.items():
        logged = [s for s, _ in points]
        assert logged == sorted(set(logged)), f"{tag}: a step twice or out of order: {logged}"
        assert logged == [s for s in (0, 1) if tag in steps[s]]
        for step, value in points:
            assert value == pytest.approx(numeric(steps[step])[tag], rel=1e-6, abs=1e-6), (tag, step)
    for name in ("train_loss", "seconds_train", "seconds_teacher", "teacher_reward_mean", "eval/arithmetic/pass_at_1"):
        assert name in scalars
    texts = tb_texts(run_dir / "tb")
    assert sorted(texts) == [0, 1]
    for step, text in texts.items():
        assert any(" ".join(p.split()) in text for p in valid_problem_texts(run_dir, step))


def test_wandb_continues_one_run_with_each_step_once(tracked):
    run_dir, steps = tracked["run_dir"], tracked["steps"]
    ids, rows = wandb_history(run_dir)
    assert ids == {archive_meta(run_dir, "wandb_run_id")}
    assert len(glob.glob(str(run_dir / "wandb" / "offline-run-*"))) == 2  # one per process, one run id
    assert [r["_step"] for r in rows] == [0, 1, 2]
    for row in rows:
        want = numeric(steps[row["_step"]])
        got = {k: v for k, v in row.items() if not k.startswith(("_", TABLE))}
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v), (row["_step"], k)
        assert row[f"{TABLE}/_type"] == "table-file"
        table = json.loads(next((run_dir / "wandb").glob(f"offline-run-*/files/{row[f'{TABLE}/path']}")).read_text())
        assert table["columns"] == ["problem", "answer", "solve_rate", "teacher_reward"]
        assert {r[0] for r in table["data"]} <= valid_problem_texts(run_dir, row["_step"])


def test_trackio_continues_one_run_with_each_step_once(tracked):
    run_dir, steps = tracked["run_dir"], tracked["steps"]
    name = archive_meta(run_dir, "trackio_run_name")
    conn = sqlite3.connect(tracked["root"] / "trackio" / "minisir.db")
    try:
        rows = conn.execute("SELECT run_id, step, metrics FROM metrics WHERE run_name = ? ORDER BY id",
                            (name,)).fetchall()
    finally:
        conn.close()
    assert len({r[0] for r in rows}) == 1, "the resumed process logged to another run"
    assert [r[1] for r in rows] == [0, 1, 2]
    for _, step, raw in rows:
        logged = json.loads(raw)
        want = numeric(steps[step])
        assert {k for k in logged if k != TABLE} == set(want)
        for k, v in want.items():
            assert logged[k] == pytest.approx(v), (step, k)
        assert logged[TABLE]["_type"] == "trackio.table"
        assert {r["problem"] for r in logged[TABLE]["_value"]} <= valid_problem_texts(run_dir, step)


def test_mlflow_continues_one_run_with_each_step_once(tracked, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir, steps = tracked["run_dir"], tracked["steps"]
    client = MlflowClient(tracking_uri=(tracked["root"] / "mlruns").as_uri())
    run_id = archive_meta(run_dir, "mlflow_run_id")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["run.steps"] == "3" and run.data.params["method.name"] == "opensir"
    experiment = client.get_experiment_by_name("minisir")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    keys = {k for s in steps.values() for k in numeric(s)}
    assert set(run.data.metrics) == keys
    for key in keys:
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert [s for s, _ in history] == [s for s in (0, 1, 2) if key in steps[s]], key
        for step, value in history:
            assert value == pytest.approx(numeric(steps[step])[key]), (key, step)
    artifacts = sorted(a.path for a in client.list_artifacts(run_id, TABLE))
    assert artifacts == [f"{TABLE}/step-{s:06d}.json" for s in (0, 1, 2)]
    table = json.loads(Path(client.download_artifacts(run_id, artifacts[0], str(tracked["root"]))).read_text())
    assert set(table["columns"]) == {"problem", "answer", "solve_rate", "teacher_reward"}
    assert {r[table["columns"].index("problem")] for r in table["data"]} <= valid_problem_texts(run_dir, 0)


# --------------------------------------------------------------------------- fast: no model
def test_validating_a_recipe_imports_neither_torch_nor_a_tracker():
    code = ("import sys, minisir.recipe as r; r.parse_recipe({'run': {'report_to': %r}}); "
            "loaded = [m for m in ('torch', 'tensorboard', 'wandb', 'trackio', 'mlflow') if m in sys.modules]; "
            "assert not loaded, loaded" % ALL)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("value, message", [
    (["tensorboard", "tensorboard"], "run.report_to: tensorboard is listed twice"),
    (["comet"], "run.report_to.0: Input should be 'tensorboard', 'wandb', 'trackio' or 'mlflow'"),
])
def test_a_bad_report_to_names_the_field(value, message):
    from minisir.errors import RecipeError
    from minisir.recipe import parse_recipe

    with pytest.raises(RecipeError, match="^recipe: " + message.replace("(", r"\(")):
        parse_recipe({"run": {"report_to": value}})
    assert parse_recipe({"run": {"report_to": "wandb"}}).run.report_to == ["wandb"]  # --set run.report_to=wandb
    assert parse_recipe({}).run.report_to == []


@pytest.mark.parametrize("name, module", [(name, name) for name in ALL] + [("mlflow", "pandas")])
def test_a_missing_tracker_is_one_line_before_the_model_loads(name, module, tmp_path, monkeypatch, no_model_loading):
    from minisir.cli import main

    monkeypatch.setitem(sys.modules, module, None)  # `import module` fails as if it were not installed
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"].update({"dir": str(tmp_path / "run"), "report_to": [name]})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: run.report_to: {name} is not installed; pip install 'minisir[{name}]'"]


def test_a_tracker_that_cannot_start_stops_the_run_in_one_line(tmp_path):
    (tmp_path / "tb").write_text("a file where TensorBoard's log directory goes")
    trackers = Trackers(["tensorboard"])
    with Archive.open(tmp_path) as archive, pytest.raises(MinisirError) as err:
        trackers.start(RunInfo(tmp_path, {}, -1, archive))
    assert str(err.value).startswith("run.report_to: tensorboard could not start (")
    assert "\n" not in str(err.value)


def test_tensorboard_resume_purges_steps_after_the_last_commit(tmp_path):
    """A process that logged steps 2-3 whose commits were lost (e.g. an archive restored from a
    copy): the resumed run's steps 2-3 replace them, each shown once."""
    with Archive.open(tmp_path) as archive:
        first = Trackers(["tensorboard"])
        first.start(RunInfo(tmp_path, {}, -1, archive))
        for step in range(4):
            first.log_step(step, {"train_loss": float(step)})
        first.finish()
        time.sleep(1.1)  # event file names carry the second they were made in
        resumed = Trackers(["tensorboard"])
        resumed.start(RunInfo(tmp_path, {}, 1, archive))
        for step in (2, 3):
            resumed.log_step(step, {"train_loss": 10.0 + step})
        resumed.finish()
    assert len(list((tmp_path / "tb").iterdir())) == 2
    assert tb_scalars(tmp_path / "tb") == {"train_loss": [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0)]}


def test_full_disk_drops_only_that_tracker(tmp_path, monkeypatch, caplog, capfd):
    """A real ENOSPC (the event file swapped for /dev/full): one warning, TensorBoard dropped,
    MLflow keeps receiving every step, nothing raised."""
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "run").mkdir()
    with Archive.open(tmp_path / "run") as archive:
        trackers = Trackers(["tensorboard", "mlflow"])
        trackers.start(RunInfo(tmp_path / "run", {"run": {"steps": 3}}, -1, archive))
        problems = [{"text": "What is 2 + 2?", "majority_answer": "4", "solve_rate": 0.5, "teacher_reward": 1.0}]
        trackers.log_step(0, {"train_loss": 0.5}, problems)
        (event_file,) = (tmp_path / "run" / "tb").iterdir()
        event_file.unlink()
        event_file.symlink_to("/dev/full")
        with caplog.at_level(logging.WARNING, logger="minisir.trackers"):
            for step in (1, 2):
                trackers.log_step(step, {"train_loss": 0.5 + step}, problems)
        assert [t.name for t in trackers.active] == ["mlflow"]
        trackers.finish()
        run_id = archive.meta("mlflow_run_id")
    assert [r.getMessage() for r in caplog.records] == [
        "tensorboard failed at step 1 ([Errno 28] No space left on device); it is dropped for the rest of this "
        "run, which goes on (the archive has every step)"]
    assert "Traceback" not in capfd.readouterr().err
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 1.5), (2, 2.5)]


def test_a_kill_between_a_commit_and_its_send_is_made_good_on_resume(tmp_path, monkeypatch):
    """The process dies after step 0's commit, inside its TensorBoard write (SystemExit passes
    Trackers' net as a kill would): the archive has step 0, TensorBoard nothing. The resumed run
    sends step 0 from the archive before step 1, each once, with the archive's values."""
    from minisir.loop import TRACKERS_SENT, Runner
    from minisir.recipe import parse_recipe
    from minisir.trackers import TensorBoardTracker

    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"].update({"dir": str(tmp_path / "run"), "steps": 1, "report_to": ["tensorboard"]})
    real = TensorBoardTracker.log_step

    def killed(self, step, values):
        raise SystemExit("killed between the commit and the send")

    monkeypatch.setattr(TensorBoardTracker, "log_step", killed)
    runner = Runner(parse_recipe(data), progress=False)
    with pytest.raises(SystemExit):
        runner.run()
    runner.close(failed=True)
    assert sorted(archive_steps(tmp_path / "run")) == [0]
    assert archive_meta(tmp_path / "run", TRACKERS_SENT) == "-1"  # the trackers started; step 0 never got there

    monkeypatch.setattr(TensorBoardTracker, "log_step", real)
    data["run"]["steps"] = 2
    runner = Runner(parse_recipe(data), progress=False)
    try:
        assert runner.run() == 1
    finally:
        runner.close()
    steps = archive_steps(tmp_path / "run")
    assert sorted(steps) == [0, 1] and archive_meta(tmp_path / "run", TRACKERS_SENT) == "1"
    scalars = tb_scalars(tmp_path / "run" / "tb")
    assert [s for s, _ in scalars["seconds_step"]] == [0, 1]
    for tag, points in scalars.items():
        for step, value in points:
            assert value == pytest.approx(numeric(steps[step])[tag], rel=1e-6, abs=1e-6), (tag, step)
