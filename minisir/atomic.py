"""Write a file or a directory so that it appears whole or not at all.

Everything is written under a hidden temporary name beside its target (".NAME.XXXX.tmp",
same filesystem, so the final rename is atomic) and renamed into place only when the
writing block succeeds; on failure the temporary is removed and the target is untouched.
A process killed mid-write leaves only the hidden temporary behind (the run loop deletes
".step-*" leftovers on resume).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; others (e.g. a host user of a Docker volume) must read it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; it replaces `path` only if the block succeeds.

    An existing `path` is moved aside (".NAME.XXXX.old") just before the rename and removed
    after it: `path` is never half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
