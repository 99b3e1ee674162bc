"""The archive's tables, how values are stored in them, and the checks a file passes before SQLite opens it for writing.

A file that is not a healthy minisir archive (not SQLite, truncated, corrupt, another program's
database, a newer schema) is refused with one line that names it and what to do; it is never written.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArchiveError

SCHEMA_VERSION = 2  # 2: the label's fields are columns of problems (they were keys of its JSON `extra` in 1)
_SQLITE_MAGIC = b"SQLite format 3\x00"

# What a problem's solvers were rewarded for matching, where it came from (majority, executed, known),
# the program's answer, and whether the majority vote equals it (the label audit).
LABEL_COLUMNS = ("label", "label_source", "executed_answer", "majority_correct")
PROBLEM_COLUMNS = (
    "key", "text", "concepts", "parent_id", "step", "role", "method", "valid",
    "invalid_reason", "majority_answer", "solve_rate", "n_parsed", "n_samples",
    "solvability", "diversity", "length", "format", "teacher_reward",
    "embedding", "embed_model", "raw", "created_at", *LABEL_COLUMNS, "extra",
)
SOLUTION_COLUMNS = (
    "problem_id", "step", "text", "n_tokens", "answer", "agrees", "reward",
    "finish_reason", "extra",
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    seed INTEGER,
    recipe TEXT NOT NULL,
    versions TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    metrics TEXT
);
CREATE TABLE IF NOT EXISTS problems (
    id INTEGER PRIMARY KEY,
    key TEXT,
    text TEXT,
    concepts TEXT,
    parent_id INTEGER REFERENCES problems(id),
    step INTEGER REFERENCES steps(step),
    role TEXT,
    method TEXT,
    valid INTEGER NOT NULL DEFAULT 1,
    invalid_reason TEXT,
    majority_answer TEXT,
    solve_rate REAL,
    n_parsed INTEGER,
    n_samples INTEGER,
    solvability REAL,
    diversity REAL,
    length REAL,
    format REAL,
    teacher_reward REAL,
    embedding BLOB,
    embed_model TEXT,
    raw TEXT,
    created_at REAL,
    label TEXT,
    label_source TEXT,
    executed_answer TEXT,
    majority_correct INTEGER,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS problems_step ON problems(step);
CREATE INDEX IF NOT EXISTS problems_parent ON problems(parent_id);
CREATE INDEX IF NOT EXISTS problems_valid ON problems(valid);
CREATE TABLE IF NOT EXISTS solutions (
    id INTEGER PRIMARY KEY,
    problem_id INTEGER NOT NULL REFERENCES problems(id),
    step INTEGER REFERENCES steps(step),
    text TEXT,
    n_tokens INTEGER,
    answer TEXT,
    agrees INTEGER,
    reward REAL,
    finish_reason TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS solutions_problem ON solutions(problem_id);
CREATE TABLE IF NOT EXISTS adapters (
    step INTEGER PRIMARY KEY REFERENCES steps(step),
    path TEXT NOT NULL,
    sha256 TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS evals (
    id INTEGER PRIMARY KEY,
    step INTEGER,
    benchmark TEXT NOT NULL,
    metrics TEXT,
    created_at REAL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


def fix(path: Path) -> str:
    return f"use a new run directory (run.dir) or delete {path} to start fresh"


def check_file(path: Path) -> None:
    """Cheap structural checks BEFORE SQLite touches the file (it would happily
    treat garbage as an empty database on some paths)."""
    size = path.stat().st_size
    if size == 0:
        return  # an empty file is an empty database; SQLite initialises it
    with path.open("rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise ArchiveError(f"archive {path} is not an SQLite file; {fix(path)}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(header[28:32], "big")
    change_counter = int.from_bytes(header[24:28], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    if page_size < 512 or page_size & (page_size - 1):
        raise ArchiveError(f"archive {path} has a corrupt header; {fix(path)}")
    if n_pages and valid_for == change_counter and size < n_pages * page_size:
        raise ArchiveError(
            f"archive {path} is truncated ({size} of {n_pages * page_size} bytes); {fix(path)}"
        )


def check_readonly(path: Path) -> int:
    """Open read-only, run quick_check and return user_version (schema)."""
    # With no -wal file there is nothing to recover, so open immutable: SQLite then
    # creates no -wal/-shm side files next to a file we may be about to refuse.
    wal = Path(str(path) + "-wal")
    flags = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True)
    except sqlite3.Error as exc:
        raise ArchiveError(f"archive {path} cannot be opened ({exc}); {fix(path)}") from exc
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise ArchiveError(f"archive {path} is corrupt ({result}); {fix(path)}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"archive {path} is corrupt ({exc}); {fix(path)}") from exc
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        raise ArchiveError(
            f"archive {path} has schema {version}, newer than this minisir ({SCHEMA_VERSION}); "
            "upgrade minisir or use a new run directory (run.dir)"
        )
    if tables and version == 0:
        raise ArchiveError(f"archive {path} is an SQLite file but not a minisir archive; {fix(path)}")
    return version


def upgrade(conn: sqlite3.Connection, path: Path) -> Path:
    """Schema 1 -> 2: the label's fields move from each problem's JSON `extra` to their own columns.

    A copy of the file is kept first (<archive>.v1.bak, SQLite's online backup, so a WAL file's
    commits are in it), then one transaction adds the columns, moves the values and sets the
    version: a failure leaves the archive as it was. Returns the backup's path.
    """
    backup = path.with_name(path.name + ".v1.bak")
    if not backup.exists():
        target = sqlite3.connect(str(backup))
        try:
            conn.backup(target)
        finally:
            target.close()
    moved = ", ".join(f"{c} = json_extract(extra, '$.{c}')" for c in LABEL_COLUMNS)
    dropped = ", ".join(f"'$.{c}'" for c in LABEL_COLUMNS)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for column, kind in zip(LABEL_COLUMNS, ("TEXT", "TEXT", "TEXT", "INTEGER")):
            conn.execute(f"ALTER TABLE problems ADD COLUMN {column} {kind}")
        conn.execute(f"UPDATE problems SET {moved} WHERE extra IS NOT NULL")
        conn.execute(f"UPDATE problems SET extra = NULLIF(json_remove(extra, {dropped}), '{{}}') "
                     "WHERE extra IS NOT NULL")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '2')")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return backup


def json_text(value: Any) -> str:
    """How dicts and lists are stored: sorted-key JSON (Paths and the like as text)."""
    return json.dumps(value, sort_keys=True, default=str)


def number(x: Any) -> float | None:
    """A stored number: NaN is kept as NULL."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def embedding_blob(value: Any) -> bytes | None:
    """An embedding as its float32 bytes."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    return arr.tobytes()
