"""A run directory's guards: one process at a time (an exclusive lock), files checked by hash, and
the library versions stored with the run."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from . import __version__
from .errors import MinisirError, RecipeError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunLock:
    """An exclusive flock on <run_dir>/.lock: two processes on one run dir would
    interleave steps and delete each other's files. The OS drops it when the process dies."""

    def __init__(self, fh=None):
        self.fh = fh

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing the descriptor releases the lock
            self.fh = None


def lock_run_dir(run_dir: Path) -> RunLock:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return RunLock()
    path = run_dir / ".lock"
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise RecipeError(f"run.dir: cannot write {path} ({exc.strerror or exc}); choose a writable run.dir") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        owner = fh.read().strip() or "?"
        fh.close()
        raise MinisirError(f"run.dir {run_dir} is in use by another minisir process (pid {owner}); "
                           "wait for it to finish or stop it, or choose another run.dir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return RunLock(fh)


def versions() -> dict[str, str]:
    """Versions that shape results, stored with the run."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"minisir": __version__}
    for name in ("llama-cpp-python", "torch", "transformers", "peft", "gguf", "sentence-transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out
