"""`minisir run`: the self-play loop, one committed step at a time, resumable.

A step samples, scores and trains in memory, then writes its adapter and trainer state
to new files and only then commits everything to the archive in one transaction. A run
killed at any moment resumes after the last committed step: files of a step that never
committed are deleted on resume, and the random streams are derived from (seed, step),
so the resumed step replays the same draws.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from .archive import ARCHIVE_NAME, Archive
from .assets import resolve_gguf, resolve_hf_dir
from .data_parallel import Ranks, ShardedSampler
from .errors import ArchiveError, MinisirError, RecipeError
from .labels import load_verifier
from .methods import method_module
from .prompting import ChatFn, choose_style
from .recipe import Recipe, current_defaults
from .run_dir import RunLock, lock_run_dir, sha256_file, versions
from .sampler import Sampler
from .signals import handling
from .step_metrics import merge_rounds, sampler_counters, sampler_split, summary_line
from .sync_guard import SyncGuard
from .trackers import RunInfo, Trackers, check_installed, eval_scalars, scalars

log = logging.getLogger(__name__)


class StopRequested(MinisirError):
    """SIGINT/SIGTERM arrived: the step in flight was abandoned, nothing half-written."""


class _Phases:
    """Times named phases and honours stop requests between them."""

    def __init__(self, bar: tqdm | None, stop: Callable[[], bool]):
        self.timings: dict[str, float] = {}
        self.bar = bar
        self.stop = stop

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.stop():
            raise StopRequested(f"stopped before {name}")
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


class Runner:
    """Owns the sampler, embedder, trainer and archive of one run directory.

    Under `accelerate launch` there is one Runner per rank: every rank samples and trains
    its share of each step; rank 0 alone writes the archive, adapters and trainer state.
    """

    def __init__(self, recipe: Recipe, progress: bool = True, force_config: bool = False):
        self.recipe = recipe
        self.force_config = force_config  # resume despite a changed archive.STATE_KEYS setting
        self.ranks = Ranks.from_env()
        self.progress = progress and self.ranks.is_main
        self.run_dir = recipe.run_dir
        self.adapter_dir = self.run_dir / "adapters"
        self.state_dir = self.run_dir / "state"
        # Cheap checks first: a missing model, an unusable run.dir or a refused archive
        # must fail in about a second, before the sampler or trainer load anything.
        self.gguf = resolve_gguf(recipe.model.gguf)
        self.hf_dir = resolve_hf_dir(recipe.model.hf_dir)
        check_installed(recipe.run.report_to)
        if getattr(recipe.method, "verifier", None):  # a user's checker that cannot be imported
            load_verifier(recipe.method.verifier)
        # Rank 0 alone reports to the live trackers, as it alone writes the archive.
        self.trackers = Trackers(recipe.run.report_to if self.ranks.is_main else [])
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecipeError(f"run.dir: cannot create {self.run_dir} ({exc.strerror or exc}); "
                              "choose a writable run.dir") from None
        self._lock = lock_run_dir(self.run_dir) if self.ranks.is_main else RunLock()
        self.archive = None
        try:  # on any failure below, release the lock and archive (in-process callers retry)
            self.archive = self._open_archive()
            self._stop = False
            _quiet_libraries()
            self.sampler = self._make_sampler()
        except BaseException:
            if self.archive is not None:
                self.archive.close()
            self._lock.close()
            raise
        self.chat: ChatFn | None = choose_style(recipe.model.prompt_style, self.sampler.chat_template)
        # What a method's step sees (methods.common.Context): its config, the run's seed and floors, the problems.
        self.method, self.seed, self.rounds_per_step = recipe.method, recipe.run.seed, recipe.run.rounds_per_step
        self.min_reward_std, self.problems = recipe.trainer.min_reward_std, self.archive
        self._embedder = None
        self._trainer = None
        self.sync = SyncGuard(self.sampler, lambda: self.trainer, recipe.trainer, recipe.sampler.adapter_scale,
                              self._reload_adapter)
        self.cache: dict[str, Any] = {}  # per-run values computed once (e.g. few-shot embeddings)

    # ------------------------------------------------------------------ parts
    def _open_archive(self) -> Archive:
        """Rank 0 opens (or creates) the archive and checks the recipe; the others then read it."""
        path = self.run_dir / ARCHIVE_NAME
        if not self.ranks.is_main:
            self.ranks.barrier("waiting for rank 0 to open the archive")
            return Archive.open(path, readonly=True)
        archive = None
        try:
            archive = Archive.open(path)
            archive.ensure_run(self.recipe.resolved(), versions(), self.recipe.run.seed, upgrade=current_defaults,
                               force=self.force_config)
        except BaseException as exc:
            if archive is not None:  # closed, so SQLite leaves no -wal/-shm files by a refused archive
                archive.close()
            if isinstance(exc, sqlite3.OperationalError):  # disk full, read-only file system, ...
                raise ArchiveError(f"{path}: cannot write the archive ({exc}); free space or fix "
                                   "permissions, then rerun") from None
            raise
        self.ranks.barrier("opening the archive")
        return archive

    def _make_sampler(self):
        """This rank's llama.cpp sampler: on its own GPU and its share of the CPU threads."""
        s, ranks = self.recipe.sampler, self.ranks
        if s.backend == "openai":
            return self._server_sampler()
        if ranks.world == 1:
            return Sampler(self.gguf, n_ctx=s.n_ctx, n_threads=s.n_threads, n_parallel=s.n_parallel,
                           n_gpu_layers=s.n_gpu_layers, loop_repeats=s.loop_repeats)
        threads = s.n_threads or max(1, (os.cpu_count() or 1) // ranks.local_world)
        local = Sampler(self.gguf, n_ctx=s.n_ctx, n_threads=threads, n_parallel=s.n_parallel,
                        n_gpu_layers=s.n_gpu_layers, gpu=ranks.local_rank, loop_repeats=s.loop_repeats)
        return ShardedSampler(local, ranks)

    def _server_sampler(self):
        """Sampling on the recipe's OpenAI-compatible server, refused at start if it cannot take adapters."""
        from .server_sampler import ServerSampler

        s = self.recipe.sampler
        if self.ranks.world > 1:
            raise RecipeError("sampler.backend: openai runs in one process (the server spreads the sampling); "
                              "launch it without accelerate, or use sampler.backend: llama_cpp")
        sampler = ServerSampler(s.url, self.gguf, served_model=s.served_model,
                                max_concurrency=s.max_concurrency, timeout_s=s.timeout_s)
        try:
            sampler.check_runtime_adapters()
        except BaseException:
            sampler.close()
            raise
        return sampler

    @property
    def embedder(self):
        if self._embedder is None:
            from .embed import Embedder

            self._embedder = Embedder(getattr(self.recipe.method, "embedder", None))
        return self._embedder

    @property
    def trainer(self):
        if self._trainer is None:
            from .trainer import GRPOTrainer

            cfg = self.recipe.trainer.model_copy(update={"seed": self.recipe.run.seed})
            if self.ranks.world > 1 and cfg.device is None:
                import torch

                if torch.cuda.is_available():  # each rank trains on its own GPU
                    cfg = cfg.model_copy(update={"device": f"cuda:{self.ranks.local_rank}"})
            self._trainer = GRPOTrainer(cfg, self.gguf, self.hf_dir, seed=self.recipe.run.seed, ranks=self.ranks)
            state = self._latest_state()
            if state is not None:
                self._trainer.load_state(state)
        return self._trainer

    def _latest_state(self) -> Path | None:
        """Trainer state of the newest committed step that trained (steps without samples save none)."""
        return latest_state(self.state_dir, self.archive.last_step())

    def _state_path(self, step: int) -> Path:
        return self.state_dir / f"step-{step:06d}"

    def _adapter_path(self, step: int) -> Path:
        return self.adapter_dir / f"step-{step:06d}.gguf"

    def _peft_path(self, step: int) -> Path:
        """The same adapter in PEFT format (sampler.backend: openai): the GGUF's path without .gguf."""
        return self.adapter_dir / f"step-{step:06d}"

    def close(self, failed: bool = False) -> None:
        """Release the trackers, sampler, archive and lock; leave the rank group (`failed`: mid-step, skip its barrier)."""
        self.trackers.finish(failed=failed)
        self.sampler.close()
        self.archive.close()
        self._lock.close()
        self.ranks.close(in_step=failed)

    # ------------------------------------------------------------------ resume
    def _clean_uncommitted(self, last: int) -> None:
        """Delete adapter/state files of steps that never committed (a killed step)."""
        # Hidden ".step-*" names are temp files of writers killed mid-write (the run dir
        # is locked, so no live writer owns them).
        for path in list(self.adapter_dir.glob(".step-*")) + list(self.state_dir.glob(".step-*")):
            log.info("removing %s left by an interrupted write", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        for path in list(self.adapter_dir.glob("step-*")) + list(self.state_dir.glob("step-*")):
            try:
                step = int(path.name.split("-")[1].split(".")[0])
            except (IndexError, ValueError):
                continue
            if step > last or path.name.endswith(".tmp"):
                log.info("removing %s from an uncommitted step", path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _restore_adapter(self) -> None:
        latest = self.archive.latest_adapter()
        if latest:
            path = self.run_dir / latest["path"]
            if not path.is_file():
                raise MinisirError(f"adapter {path} of committed step {latest['step']} is missing; "
                                   "restore it or start a fresh run directory")
            if sha256_file(path) != latest["sha256"]:
                tqdm.write(f"adapter {path} is not the file step {latest['step']} committed (sha256 differs); "
                           "rewriting it from the trainer's state")
                self._reload_adapter()
                return
            self.sampler.set_adapter(path, self.recipe.sampler.adapter_scale)

    # ------------------------------------------------------------------ run
    def run(self, steps: int | None = None) -> int:
        """Run until run.steps RL steps are committed (or `steps` more steps); returns steps committed.

        A method's phase-0 steps (OpenSIR's initial pool) are committed like any step but
        do not count towards run.steps.
        """
        last = self.archive.last_step()
        if self.ranks.is_main:
            self._clean_uncommitted(last)
        self.ranks.barrier("waiting for rank 0 to clean up an interrupted step")
        self._restore_adapter()
        if self.recipe.run.eval_every and self.ranks.is_main:
            if not self._evaluated(None):
                tqdm.write(self._evaluate(None)[0])
            if last >= 0 and (last + 1) % self.recipe.run.eval_every == 0 and not self._evaluated(last):
                tqdm.write(self._evaluate(last)[0])  # a kill during the last step's eval: redo it
        target = self.recipe.run.steps
        rl_done = last + 1 - self.archive.phase_totals("pool")["steps"]
        if rl_done >= target or steps == 0:
            log.info("run already has %d RL steps (target %d)", rl_done, target)
            return 0
        if last >= 0 and self.ranks.is_main:
            tqdm.write(f"resuming {self.run_dir} at step {last + 1} ({rl_done} of {target} RL steps done)")
        self._start_trackers(last)
        done = 0
        with self._signals(), tqdm(total=target, initial=rl_done, desc="steps", unit="step",
                                   disable=not self.progress) as bar:
            step = last + 1
            while rl_done < target and (steps is None or done < steps):
                summary, phase = self.step(step, bar)
                if phase != "pool":
                    rl_done += 1
                    bar.update(1)
                if self.ranks.is_main:
                    tqdm.write(summary)
                done += 1
                step += 1
        return done

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask the loop to stop at the end of the current phase."""

        def ask(signum, _frame):
            if self._stop:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop = True
            tqdm.write(f"{signal.Signals(signum).name}: stopping after the current phase "
                       "(the step in flight is not committed)")

        with handling(ask):
            yield

    def step(self, step: int, bar: tqdm | None = None) -> tuple[str, str]:
        """Play (run.rounds_per_step rounds), train, export and commit one step; return its
        summary line and phase ("rl", or a method's phase 0 such as "pool")."""
        phase = _Phases(bar, lambda: self._stop)
        t0 = time.perf_counter()
        sync: dict[str, float] = {}
        if getattr(self.sampler, "can_score", True):  # a server cannot score given ids
            with phase("sync"):
                sync = self.sync.check(step)
        method = method_module(self.recipe.method.name)
        play = method.play
        generated = getattr(self.sampler, "tokens_generated", None)
        before = sampler_counters(self.sampler)
        result = merge_rounds([play(self, step, phase, r) for r in range(self.recipe.run.rounds_per_step)],
                              method.METRICS)
        sampled = {} if generated is None else {"sampled_tokens": float(self.sampler.tokens_generated - generated)}
        sampled.update(sampler_split(before, sampler_counters(self.sampler), getattr(self.sampler, "n_parallel", 0)))
        # Every rank scored the same gathered completions; rank 0's samples are the ones all train on.
        samples = self.ranks.broadcast(result.samples)

        with phase("train"):
            train = self.trainer.step(samples) if samples else {"skipped": 1.0}
        if samples:
            self.sync.remember(samples)
        if not self.ranks.is_main:  # rank 0 writes and commits; then every rank loads its adapter
            adapter = self.ranks.broadcast(None)
            self._after_commit(step, adapter)
            return summary_line(step, result.metrics), str(result.metrics.get("phase", "rl"))
        adapter = None
        with phase("export"):
            try:
                if samples:  # no samples: weights, optimizer and RNG are untouched, nothing to save
                    self.adapter_dir.mkdir(parents=True, exist_ok=True)
                    path = self.trainer.export_adapter(self._adapter_path(step))
                    if self.recipe.sampler.backend == "openai":  # the server loads PEFT adapters
                        self.trainer.export_peft_adapter(self._peft_path(step))
                    # stored relative to the run directory, so a moved run still resumes
                    adapter = {"path": str(path.relative_to(self.run_dir)), "sha256": sha256_file(path)}
                    self._save_state(step)
            except OSError as exc:  # disk full, quota, permissions: the user's to fix
                raise MinisirError(
                    f"step {step} not committed: writing its adapter/state in {self.run_dir} failed "
                    f"({exc.strerror or exc}); free space and rerun the same command to resume") from None
        metrics = {**result.metrics, **sync, **sampled}
        metrics.update({f"train_{k}": v for k, v in train.items()})
        if metrics.get("sampled_tokens"):  # how much of what was sampled teaches
            metrics["trained_token_share"] = round(float(train.get("tokens", 0.0)) / metrics["sampled_tokens"], 4)
        metrics.update({f"seconds_{k}": v for k, v in {**result.timings, **phase.timings}.items()})
        metrics["seconds_step"] = round(time.perf_counter() - t0, 3)
        if self.ranks.world > 1:
            metrics["ranks"] = self.ranks.world
        with phase("commit"):
            try:
                self.archive.commit_step({"step": step, **metrics}, result.problems, result.solutions, adapter)
            except sqlite3.OperationalError as exc:  # disk full / I/O error: rolled back, nothing half-written
                raise ArchiveError(f"step {step} not committed to {self.archive.path} ({exc}); "
                                   "free space and rerun the same command to resume") from None
        self.ranks.broadcast(adapter)
        self._after_commit(step, adapter)
        line = summary_line(step, metrics)
        values = scalars(metrics)
        every = self.recipe.run.eval_every
        if every and (step + 1) % every == 0:
            table, evaluated = self._evaluate(step)
            line += "\n" + table
            values.update(evaluated)
        self._send(step, values, result.problems)
        return line, str(metrics.get("phase", "rl"))

    def _send(self, step: int, values: dict[str, float], problems: list[dict]) -> None:
        """Send a committed step to the trackers (never raises) and note it in the archive, so a
        kill between the commit and this send is made good on resume (_start_trackers)."""
        if not self.trackers.active:
            return
        self.trackers.log_step(step, values, problems)
        self.archive.set_meta(TRACKERS_SENT, str(step))

    def _start_trackers(self, last: int) -> None:
        """Start the trackers, then send the committed steps they never got: a kill after a step's
        commit (during its eval, say) left them one step short. They start as of the last step they
        got, so TensorBoard purges whatever of the missed step a killed process had half-written."""
        if self.trackers.started or not self.trackers.active:
            return
        noted = self.archive.meta(TRACKERS_SENT)
        sent = min(last, int(noted)) if noted is not None else last  # trackers new to this run: from now on
        self.archive.set_meta(TRACKERS_SENT, str(sent))
        self.trackers.start(RunInfo(self.run_dir, self.recipe.resolved(), sent, self.archive))
        missed = [row for row in self.archive.steps() if row["step"] > sent]
        if not missed:
            return
        tqdm.write(f"sending steps {missed[0]['step']}-{missed[-1]['step']} to the trackers: "
                   "a kill came between their commit and their send")
        evals = [row for row in self.archive.evals() if row["step"] is not None]
        for row in missed:
            values = scalars(row.get("metrics") or {})
            for ev in (e for e in evals if e["step"] == row["step"]):
                values.update(eval_scalars(ev["benchmark"], ev.get("metrics") or {}))
            self._send(row["step"], values, self.archive.step_problems(row["step"]))

    def _reload_adapter(self) -> str:
        """Rewrite the latest committed adapter from the trainer's state (rank 0) and load it again."""
        latest = self.archive.latest_adapter()
        if latest is None:  # nothing trained yet: the trainer's LoRA is the base
            self.sampler.clear_adapter()
            return "no adapter (nothing trained yet)"
        path = self.run_dir / latest["path"]
        if self.ranks.is_main:
            self.trainer.export_adapter(path)
            if sha256_file(path) != latest["sha256"]:
                log.warning("the trainer's state exports %s differently from what step %s committed; "
                            "the run goes on from the trainer's state", path, latest["step"])
        self.sampler.set_adapter(path, self.recipe.sampler.adapter_scale)
        return str(path)

    def _evaluated(self, step: int | None) -> bool:
        """Whether the archive holds the in-run eval of `step` (None: the base model) with today's
        eval settings."""
        settings = self.recipe.eval.model_dump()
        for row in self.archive.evals():
            config = (row.get("metrics") or {}).get("config") or {}
            if row["step"] == step and all(config.get(k) == v for k, v in settings.items()):
                return True
        return False

    def _evaluate(self, step: int | None) -> tuple[str, dict[str, float]]:
        """Held-out accuracy of the current adapter (step None: the base model, the start of the
        held-out curve), stored in the archive (outside the step's commit); returns its table and
        its values for the trackers."""
        from .evaluate import eval_cache_dir, format_table, run_eval
        from .evaluate.runs import method_prompt

        current = self.sampler.adapter_path
        adapter = current if step is not None else None
        prompt, stop = method_prompt(self.recipe.method.name, self.chat)
        # No step has trained yet: the model is still the base, which has no step adapter to look up.
        # The base model's eval is the same for every seed of a recipe: it comes from the eval cache.
        result = run_eval(self.gguf, self.recipe.eval, adapter=adapter, archive=None,
                          sampler=self.sampler, chat=self.chat, progress=self.progress,
                          label="base" if step is None else f"step {step}",
                          prompt=prompt, stop=stop,
                          cache_dir=eval_cache_dir() if step is None else None)
        self.archive.add_eval(step, self.recipe.eval.benchmark, result.to_archive())
        if current is not None:  # run_eval activates at scale 1 (or clears it); restore the recipe's
            self.sampler.set_adapter(current, self.recipe.sampler.adapter_scale)
        return format_table([result]), eval_scalars(self.recipe.eval.benchmark, result.metrics)

    def _save_state(self, step: int) -> None:
        """Trainer state for exact resume (the trainer writes it atomically)."""
        self.trainer.save_state(self._state_path(step))

    def _after_commit(self, step: int, adapter: dict | None) -> None:
        """Hot-swap the new adapter and (rank 0) drop files nobody needs any more."""
        if adapter:
            self.sampler.set_adapter(self.run_dir / adapter["path"], self.recipe.sampler.adapter_scale)
        if not self.ranks.is_main:
            return
        if adapter:  # a new trainer state was saved with it: older ones are obsolete
            for old in self.state_dir.glob("step-*"):
                if old.name != self._state_path(step).name:
                    shutil.rmtree(old, ignore_errors=True)
        keep = self.recipe.run.keep_adapters
        if keep:
            for old in sorted(self.adapter_dir.glob("step-*.gguf"))[:-keep]:
                old.unlink(missing_ok=True)
                shutil.rmtree(old.with_suffix(""), ignore_errors=True)  # its PEFT copy, if any


def latest_state(state_dir: Path, last_step: int) -> Path | None:
    """The newest trainer state saved at or before `last_step` (a committed step).

    A step that trained nothing (a pool step, or no group with signal) saves no state, so
    the newest usable state can be older than the last step.
    """
    saved = [p for p in Path(state_dir).glob("step-*") if p.is_dir() and p.name[5:].isdigit()
             and int(p.name[5:]) <= last_step]
    return max(saved, key=lambda p: int(p.name[5:]), default=None)


def _quiet_libraries() -> None:
    """Our own progress bars and summary lines are the output; silence library chatter."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


TRACKERS_SENT = "trackers_sent_step"  # archive meta: the last step the live trackers were sent
