"""Live tracking (`run.report_to`): TensorBoard, W&B, trackio and MLflow mirror the archive.

Each committed step's metrics go out under the names of the step line and the archive's
steps table (phase times are its seconds_* metrics), with the step's in-run evaluation and a
small table of its top problems. Only what this process committed is sent, so a tracker
never shows a step the archive lacks. The archive stays the source of truth: a tracker that
fails mid-run warns once and is dropped, and the run goes on.

A resumed run continues the same tracker run: TensorBoard writes to RUN/tb again and purges
events after the last committed step; W&B, trackio and MLflow reuse the run id kept in the
archive's meta table. A kill can lose what a library had not yet written (W&B and trackio
write in the background), never duplicate it. Each library is imported only when its tracker starts.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import MinisirError, RecipeError
from .prompting import one_line
from .recipe import TRACKERS

log = logging.getLogger(__name__)

# The modules each tracker needs: the `tensorboard` package backs torch.utils.tensorboard, and
# MLflow's log_table needs pandas, which mlflow-skinny does not bring.
_MODULES = {"tensorboard": ("tensorboard",), "wandb": ("wandb",), "trackio": ("trackio",),
            "mlflow": ("mlflow", "pandas")}
PROJECT = "minisir"  # W&B/trackio project and MLflow experiment unless WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME say otherwise
TOP_PROBLEMS = 5  # rows of the per-step table
TABLE = "top_problems"
_COLUMNS = ["problem", "answer", "solve_rate", "teacher_reward"]


def install_hint(name: str) -> str:
    return f"pip install 'minisir[{name}]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: an import blocked with sys.modules[name] = None
        return False


def check_installed(names: list[str]) -> None:
    """Refuse a tracker whose package is missing, before any model loads (no import: cheap)."""
    for name in names:
        if name not in _MODULES:
            raise RecipeError(f"run.report_to: unknown tracker {name!r}; use {', '.join(TRACKERS)}")
        if not all(_installed(module) for module in _MODULES[name]):
            raise RecipeError(f"run.report_to: {name} is not installed; {install_hint(name)}")


class IdStore(Protocol):
    """Where a tracker keeps its run id across resumes (the archive's meta table)."""

    def meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


@dataclass
class RunInfo:
    """What a tracker needs to start or continue its run."""

    dir: Path
    config: dict[str, Any]  # the resolved recipe
    last_step: int  # last committed step before this process; -1 for a new run
    ids: IdStore
    name: str = field(default="")

    def __post_init__(self) -> None:
        self.name = self.name or self.dir.resolve().name


class Tracker(Protocol):
    """One live tracker. log_table comes before log_step, which ends the step."""

    name: str

    def start(self, run: RunInfo) -> None: ...

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def log_step(self, step: int, values: dict[str, float]) -> None: ...

    def finish(self, failed: bool = False) -> None: ...


def _run_id(run: RunInfo, key: str, new: str) -> tuple[str, bool]:
    """(id, resumed): the id kept under `key`, or `new`, stored before the tracker starts."""
    stored = run.ids.meta(key)
    if stored:
        return stored, True
    run.ids.set_meta(key, new)
    return new, False


# --------------------------------------------------------------------------- adapters
class TensorBoardTracker:
    """Event files in RUN/tb: `tensorboard --logdir RUN/tb`."""

    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _quiet_writer_thread()
        # purge_step: TensorBoard drops earlier events at or after it, so a step a killed process
        # logged but whose commit was lost cannot show up twice.
        purge = run.last_step + 1 if run.last_step >= 0 else None
        self.writer = SummaryWriter(log_dir=str(run.dir / "tb"), purge_step=purge)

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        def cell(v: Any) -> str:
            return " ".join(str(v).split()).replace("|", "\\|")

        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text(name, "\n".join(lines), step)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # live: each committed step is on disk before the next one starts

    def finish(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()


def _quiet_writer_thread() -> None:
    """TensorBoard's writer thread keeps a write error (a full disk) for the next call, where
    Trackers turns it into one warning, and also re-raises it; keep threading from printing
    that as a second, traceback-long report. Other threads' errors print as before."""
    previous = threading.excepthook
    if getattr(previous, "minisir_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__module__.startswith("tensorboard.summary.writer"):
            return
        previous(args)

    hook.minisir_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class _TableBuffered:
    """A tracker whose tables ride on the step's own log row (W&B and trackio): a table logged
    before the step's metrics is held, then written with them, so each step is one row."""

    def __init__(self) -> None:
        self.run: Any = None
        self.pending: dict[str, Any] = {}

    def _table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        raise NotImplementedError

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.pending[name] = self._table(columns, rows)

    def _take_tables(self) -> dict[str, Any]:
        """The held tables, handed over once."""
        pending, self.pending = self.pending, {}
        return pending


class WandbTracker(_TableBuffered):
    """A W&B run whose id is kept in the archive (WANDB_MODE=offline works; files under RUN/wandb)."""

    name = "wandb"

    def start(self, run: RunInfo) -> None:
        import wandb

        run_id, resumed = _run_id(run, "wandb_run_id", uuid.uuid4().hex[:12])
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), id=run_id, name=run.name,
                              resume="allow", config=run.config, dir=os.environ.get("WANDB_DIR") or str(run.dir),
                              allow_val_change=resumed)  # a resume may change e.g. run.steps

    def _table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        import wandb

        return wandb.Table(columns=columns, data=rows)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, **self._take_tables()}, step=step, commit=True)  # one row per step, written now

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)


class TrackioTracker(_TableBuffered):
    """A trackio run (local database in TRACKIO_DIR, or a Space) resumed by the name kept in the archive."""

    name = "trackio"

    def start(self, run: RunInfo) -> None:
        import trackio

        name, _ = _run_id(run, "trackio_run_name", f"{run.name}-{uuid.uuid4().hex[:6]}")
        self.run = trackio.init(project=PROJECT, name=name, resume="allow", config=run.config, embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)

    def _table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        import trackio

        return trackio.Table(columns=columns, data=rows)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, **self._take_tables()}, step=step)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish()


class MlflowTracker:
    """An MLflow run at MLFLOW_TRACKING_URI whose id is kept in the archive; tables are JSON artifacts."""

    name = "mlflow"

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, run: RunInfo) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient()
        stored = run.ids.meta("mlflow_run_id")
        if stored:
            self.client.update_run(stored, status="RUNNING")
            self.run_id = stored
            return
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        created = self.client.create_run(experiment_id, run_name=run.name)
        self.run_id = created.info.run_id
        run.ids.set_meta("mlflow_run_id", self.run_id)
        # Params are immutable in MLflow: logged once, at the start of the run.
        params = [Param(k, str(v)[:6000]) for k, v in _flatten(run.config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        data = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
        with warnings.catch_warnings():  # pandas deprecation chatter from inside log_table, every step
            warnings.simplefilter("ignore")
            self.client.log_table(self.run_id, data, f"{name}/step-{step:06d}.json")

    def log_step(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 500])

    def finish(self, failed: bool = False) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


ADAPTERS: dict[str, type] = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker,
                             "trackio": TrackioTracker, "mlflow": MlflowTracker}
_START_HINTS = {
    "tensorboard": "check that the run directory is writable",
    "wandb": "log in with `wandb login` or set WANDB_MODE=offline",
    "trackio": "check TRACKIO_DIR (or the Space) is writable",
    "mlflow": "set MLFLOW_TRACKING_URI to your MLflow server (a local sqlite:/// store needs the full mlflow package)",
}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _one_line(exc: BaseException) -> str:
    """The error on one line, at most 300 characters: a tracker's warning never floods the log."""
    text = one_line(str(exc)) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- what is logged
def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a step, under their archive names (text such as `phase` is left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def eval_scalars(benchmark: str, metrics: dict[str, Any]) -> dict[str, float]:
    """An in-run evaluation as eval/BENCHMARK/METRIC (pass@1 -> pass_at_1: MLflow allows no @)."""
    bench = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(benchmark).stem or benchmark)
    return {f"eval/{bench}/{k.replace('@', '_at_')}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith("_ci")}


def top_problems(problems: list[dict[str, Any]], n: int = TOP_PROBLEMS) -> tuple[list[str], list[list[Any]]]:
    """The step's best valid problems by teacher reward (then solve rate), with their majority answers."""

    def num(v: Any) -> float:
        return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf

    valid = [p for p in problems if p.get("valid", True)]
    best = sorted(valid, key=lambda p: (num(p.get("teacher_reward")), num(p.get("solve_rate"))), reverse=True)[:n]
    rows = [[str(p.get("text") or ""), str(p.get("majority_answer") or ""),
             p.get("solve_rate"), p.get("teacher_reward")] for p in best]
    return list(_COLUMNS), rows


# --------------------------------------------------------------------------- the set of trackers
class Trackers:
    """The run's trackers: started once, fed each committed step, each dropped on its first failure."""

    def __init__(self, names: list[str], adapters: dict[str, type] | None = None):
        made = adapters or ADAPTERS
        self.active: list[Tracker] = [made[name]() for name in names]
        self.started = False

    def start(self, run: RunInfo) -> None:
        """Start (or resume) every tracker; one that cannot start stops the run before any step."""
        for tracker in self.active:
            try:
                tracker.start(run)
            except Exception as exc:
                self.finish(failed=True)
                raise MinisirError(f"run.report_to: {tracker.name} could not start ({_one_line(exc)}); "
                                   f"{_START_HINTS.get(tracker.name, 'fix it')}, or remove it from run.report_to"
                                   ) from None
        self.started = True

    def log_step(self, step: int, values: dict[str, float], problems: list[dict[str, Any]] | None = None) -> None:
        """Send one committed step: the table of its top problems, then its values."""
        columns, rows = top_problems(problems or [])
        for tracker in list(self.active):
            try:
                if rows:
                    tracker.log_table(step, TABLE, columns, rows)
                tracker.log_step(step, values)
            except Exception as exc:
                self._drop(tracker, exc, step)

    def finish(self, failed: bool = False) -> None:
        for tracker in list(self.active):
            try:
                tracker.finish(failed=failed)
            except Exception as exc:
                log.warning("%s: could not finish its run (%s); the archive has every step", tracker.name,
                            _one_line(exc))
        self.active = []

    def _drop(self, tracker: Tracker, exc: BaseException, step: int) -> None:
        """The archive already holds the step: warn once, stop using this tracker, go on."""
        self.active.remove(tracker)
        log.warning("%s failed at step %d (%s); it is dropped for the rest of this run, which goes on "
                    "(the archive has every step)", tracker.name, step, _one_line(exc))
        try:
            tracker.finish(failed=True)
        except Exception:
            pass  # already reported once
