"""The run archive: one SQLite file per run directory (<run_dir>/archive.sqlite).

Everything a step produced (problems with lineage, solutions, votes, rewards,
embeddings, adapter path, metrics) is committed in ONE transaction, so a killed run
resumes at the last committed step and never sees half a step. The file is also the
user's queryable record of the run (`minisir archive ...`).

Rules: an existing file that is not a healthy minisir archive is refused with
ArchiveError and never written to; a different model/method recipe on resume is
refused too, since mixing runs would silently corrupt lineage and diversity.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sqlite_utils

from .archive_schema import (PROBLEM_COLUMNS, SCHEMA, SCHEMA_VERSION, SOLUTION_COLUMNS, check_file, check_readonly,
                             embedding_blob, fix, json_text, number, upgrade)
from .errors import ArchiveError

log = logging.getLogger(__name__)

ARCHIVE_NAME = "archive.sqlite"
# Recipe sections that must match on resume (the rest, e.g. trainer or run.steps, may change).
RESUME_KEYS = ("model", "method")
# Single settings that change what a run's saved state means: the random streams (seed), rlvr's
# question index (rounds), the saved LoRA's shape and scale. Refused on resume unless forced.
STATE_KEYS = ("run.seed", "run.rounds_per_step", "trainer.lora_rank", "trainer.lora_alpha",
              "trainer.target_modules")

def _canon(value: Any) -> Any:
    """JSON round trip, so Paths/tuples compare equal to what was stored."""
    return json.loads(json_text(value))


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}")
        return out
    return [] if a == b else [prefix]


class Archive:
    """SQLite archive of one run. Not thread-safe: use from the loop's thread."""

    def __init__(self, db: sqlite_utils.Database, path: Path, readonly: bool = False):
        self.db = db
        self.path = path
        self.readonly = readonly
        self._emb: np.ndarray | None = None  # capacity buffer, rows [:_emb_n] are live
        self._emb_n = 0
        self._emb_ids: list[int] = []

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(cls, path: Path | str, readonly: bool = False) -> "Archive":
        """Create or open an archive. A directory means <dir>/archive.sqlite.

        readonly=True (inspection while a run is going) never creates anything.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / ARCHIVE_NAME
        if path.exists():
            if not path.is_file():
                raise ArchiveError(f"archive {path} is not a file; {fix(path)}")
            check_file(path)
            if path.stat().st_size:
                check_readonly(path)
        elif readonly:
            raise ArchiveError(f"archive {path} does not exist; check the run directory")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if readonly:
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            else:
                conn = sqlite3.connect(str(path))
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.conn.execute("PRAGMA foreign_keys = ON")
            version = db.conn.execute("PRAGMA user_version").fetchone()[0]
            if readonly and version == 0:
                db.close()
                raise ArchiveError(f"archive {path} is empty (no step was ever committed); check the run directory")
            if readonly and version < SCHEMA_VERSION:
                db.close()
                raise ArchiveError(f"archive {path} has schema {version}, older than this minisir's "
                                   f"({SCHEMA_VERSION}); `minisir archive upgrade {path.parent}` upgrades it in "
                                   "place (a backup is kept), as resuming the run would")
            if not readonly:
                db.conn.execute("PRAGMA busy_timeout = 10000")
                if db.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.conn.execute("PRAGMA journal_mode = WAL")
                db.conn.execute("PRAGMA synchronous = NORMAL")
                if version == 1:
                    backup = upgrade(db.conn, path)
                    log.warning("archive %s upgraded to schema %d (label columns); the old file is kept as %s",
                                path, SCHEMA_VERSION, backup)
                if version == 0:
                    db.conn.executescript(SCHEMA)
                    db.conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    db.conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('created_at', ?)", (str(time.time()),)
                    )
                    db.conn.commit()
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"archive {path} cannot be used ({exc}); {fix(path)}") from exc
        return cls(db, path, readonly)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ run identity
    def ensure_run(self, resolved_recipe: dict, versions: dict, seed: int,
                   upgrade: Callable[[str, Any], Any] | None = None, force: bool = False) -> None:
        """First call stores the recipe; later calls refuse a different model/method, and a changed
        STATE_KEYS setting unless `force` (then it is logged and the run goes on).

        upgrade(section, stored) re-reads a stored section with today's defaults, so a field
        minisir added since the run started does not count as a change (recipe.current_defaults).
        """
        recipe = _canon(resolved_recipe)
        row = self.db.conn.execute("SELECT recipe, seed FROM runs ORDER BY id LIMIT 1").fetchone()
        if row is None:
            with self.db.atomic():
                self.db.conn.execute(
                    "INSERT INTO runs (created_at, seed, recipe, versions) VALUES (?, ?, ?, ?)",
                    (time.time(), int(seed), json_text(recipe), json_text(versions)),
                )
            return
        stored = json.loads(row[0])
        differing: list[str] = []
        for key in RESUME_KEYS:
            then = upgrade(key, stored.get(key)) if upgrade is not None else stored.get(key)
            differing += _diff(_canon(then), recipe.get(key), key)
        if differing:
            shown = ", ".join(differing[:6]) + (" ..." if len(differing) > 6 else "")
            raise ArchiveError(
                f"archive {self.path} belongs to a run with a different recipe ({shown} differ); "
                f"{fix(self.path)}"
            )
        for key in STATE_KEYS:
            section, name = key.split(".")
            then = (stored.get(section) or {}).get(name, row[1] if key == "run.seed" else None)
            now = (recipe.get(section) or {}).get(name, seed if key == "run.seed" else None)
            if then is None or now is None or _canon(then) == _canon(now):
                continue
            if force:
                log.warning("resuming with %s=%s; the run was started with %s (--force-config)", key, now, then)
                continue
            raise ArchiveError(
                f"archive {self.path} was started with {key}={then} and this recipe has {now}; that changes what "
                f"the saved state means. Resume with {key}={then}, pass --force-config to resume anyway, or "
                f"{fix(self.path)}")

    def meta(self, key: str) -> str | None:
        """A value of the meta table (bookkeeping such as a tracker's run id), None when unset."""
        row = self.db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Keep a bookkeeping value (own small transaction), e.g. the W&B run id a resume reuses."""
        if self.readonly:
            raise ArchiveError(f"archive {self.path} was opened read-only")
        with self.db.atomic():
            self.db.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def run_info(self) -> dict | None:
        row = self.db.conn.execute(
            "SELECT created_at, seed, recipe, versions FROM runs ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return {
            "created_at": row[0], "seed": row[1],
            "recipe": json.loads(row[2]), "versions": json.loads(row[3] or "{}"),
        }

    # ------------------------------------------------------------------ steps
    def last_step(self) -> int:
        """Highest committed step, -1 when none."""
        row = self.db.conn.execute("SELECT MAX(step) FROM steps").fetchone()
        return -1 if row[0] is None else int(row[0])

    def phase_totals(self, phase: str, sums: tuple[str, ...] = ()) -> dict[str, int]:
        """Committed steps whose metrics say `phase` (e.g. OpenSIR's "pool"), and the sum of each
        step metric named in `sums` over them: how far a resumable phase has got."""
        totals = "".join(f", COALESCE(SUM(json_extract(metrics, '$.{name}')), 0)" for name in sums)
        row = self.db.conn.execute(f"SELECT COUNT(*){totals} FROM steps WHERE json_extract(metrics, '$.phase') = ?",
                                   (phase,)).fetchone()
        return {"steps": int(row[0]), **{name: int(v) for name, v in zip(sums, row[1:])}}

    def commit_step(
        self,
        step: dict,
        problems: list[dict],
        solutions: list[dict],
        adapter: dict | None = None,
    ) -> dict[str, int]:
        """Write one step atomically; return caller problem key -> problem id.

        step: {"step": int, ...metrics}. problems: dicts with a unique "key" and the
        PROBLEM_COLUMNS fields; "parent_key" may name a problem of this same commit
        (e.g. a seed) instead of "parent_id"; "concepts" is a list; "embedding" a
        vector. Unknown fields go to the JSON `extra` column. solutions: dicts with
        "problem_key" (this commit) or "problem_id" (earlier) plus SOLUTION_COLUMNS.
        adapter: {"path", "sha256"} (step defaults to this step). Any error rolls
        everything back and nothing of the step is visible.
        """
        if self.readonly:
            raise ArchiveError(f"archive {self.path} was opened read-only")
        if "step" not in step:
            raise ValueError("commit_step: step dict needs a 'step' number")
        step_no = int(step["step"])
        now = time.time()
        key_to_id: dict[str, int] = {}
        new_emb: list[tuple[int, np.ndarray]] = []
        conn = self.db.conn
        try:
            with self.db.atomic():
                if conn.execute("SELECT 1 FROM steps WHERE step = ?", (step_no,)).fetchone():
                    raise ArchiveError(
                        f"archive {self.path}: step {step_no} is already committed "
                        f"(last step {self.last_step()}); resume from step {self.last_step() + 1}"
                    )
                metrics = {k: v for k, v in step.items() if k != "step"}
                conn.execute(
                    "INSERT INTO steps (step, created_at, metrics) VALUES (?, ?, ?)",
                    (step_no, now, json_text(metrics)),
                )
                for prob in problems:
                    key = str(prob["key"])
                    if key in key_to_id:
                        raise ValueError(f"commit_step: duplicate problem key {key!r}")
                    row = self._problem_row(prob, step_no, now, key_to_id)
                    cols = ", ".join(row)
                    marks = ", ".join("?" for _ in row)
                    cur = conn.execute(f"INSERT INTO problems ({cols}) VALUES ({marks})", list(row.values()))
                    pid = int(cur.lastrowid)
                    key_to_id[key] = pid
                    if row.get("embedding") is not None:
                        new_emb.append((pid, np.frombuffer(row["embedding"], dtype=np.float32)))
                for sol in solutions:
                    row = self._solution_row(sol, step_no, key_to_id)
                    cols = ", ".join(row)
                    marks = ", ".join("?" for _ in row)
                    conn.execute(f"INSERT INTO solutions ({cols}) VALUES ({marks})", list(row.values()))
                if adapter is not None:
                    conn.execute(
                        "INSERT INTO adapters (step, path, sha256, created_at) VALUES (?, ?, ?, ?)",
                        (int(adapter.get("step", step_no)), str(adapter["path"]), adapter.get("sha256"), now),
                    )
        except sqlite3.IntegrityError as exc:
            raise ArchiveError(f"archive {self.path}: step {step_no} not committed ({exc})") from exc
        # Only after COMMIT succeeded: the in-memory matrix mirrors the file.
        if self._emb is not None:
            for pid, vec in new_emb:
                self._append_embedding(pid, vec)
        return key_to_id

    def _problem_row(self, prob: dict, step_no: int, now: float, key_to_id: dict[str, int]) -> dict:
        row: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, value in prob.items():
            if name in ("parent_key",):
                continue
            if name in PROBLEM_COLUMNS:
                row[name] = value
            else:
                extra[name] = value
        row["key"] = str(prob["key"])
        row.setdefault("step", step_no)
        row.setdefault("created_at", now)
        if prob.get("parent_key") is not None:
            pk = str(prob["parent_key"])
            if pk not in key_to_id:
                raise ValueError(f"commit_step: parent_key {pk!r} is not an earlier problem of this step")
            row["parent_id"] = key_to_id[pk]
        if isinstance(row.get("concepts"), (list, tuple)):
            row["concepts"] = json_text(list(row["concepts"]))
        row["valid"] = int(bool(row.get("valid", True)))
        row["embedding"] = embedding_blob(row.get("embedding"))
        for name in ("solve_rate", "solvability", "diversity", "length", "format", "teacher_reward"):
            if name in row:
                row[name] = number(row[name])
        if extra:
            row["extra"] = json_text(extra)
        return row

    @staticmethod
    def _solution_row(sol: dict, step_no: int, key_to_id: dict[str, int]) -> dict:
        row: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, value in sol.items():
            if name == "problem_key":
                continue
            (row if name in SOLUTION_COLUMNS else extra)[name] = value
        if "problem_key" in sol:
            key = str(sol["problem_key"])
            if key not in key_to_id:
                raise ValueError(f"commit_step: solution refers to unknown problem_key {key!r}")
            row["problem_id"] = key_to_id[key]
        if row.get("problem_id") is None:
            raise ValueError("commit_step: solution needs problem_key or problem_id")
        row.setdefault("step", step_no)
        if "agrees" in row and row["agrees"] is not None:
            row["agrees"] = int(bool(row["agrees"]))
        if "reward" in row:
            row["reward"] = number(row["reward"])
        if extra:
            row["extra"] = json_text(extra)
        return row

    def add_eval(self, step: int | None, benchmark: str, metrics: dict) -> None:
        """Record an evaluation result (own small transaction)."""
        with self.db.atomic():
            self.db.conn.execute(
                "INSERT INTO evals (step, benchmark, metrics, created_at) VALUES (?, ?, ?, ?)",
                (step, benchmark, json_text(metrics), time.time()),
            )

    # ------------------------------------------------------------------ embeddings
    def embedding_matrix(self) -> tuple[np.ndarray, list[int]]:
        """(N, dim) float32 embeddings of all problems that have one, and their ids.

        Loaded from the file once, then kept in memory and appended by commit_step.
        The returned array is a view: copy it if you keep it across commits.
        """
        if self._emb is None:
            self._load_embeddings()
        assert self._emb is not None
        return self._emb[: self._emb_n], list(self._emb_ids)

    def _load_embeddings(self) -> None:
        rows = self.db.conn.execute(
            "SELECT id, embedding FROM problems WHERE embedding IS NOT NULL ORDER BY id"
        ).fetchall()
        self._emb_ids = []
        if not rows:
            self._emb = np.zeros((0, 0), dtype=np.float32)
            self._emb_n = 0
            return
        dim = len(rows[0][1]) // 4
        buf = np.empty((max(16, len(rows) * 2), dim), dtype=np.float32)
        for i, (pid, blob) in enumerate(rows):
            if len(blob) != dim * 4:
                raise ArchiveError(
                    f"archive {self.path}: problem {pid} has a {len(blob) // 4}-dim embedding, "
                    f"others {dim}; {fix(self.path)}"
                )
            buf[i] = np.frombuffer(blob, dtype=np.float32)
            self._emb_ids.append(int(pid))
        self._emb = buf
        self._emb_n = len(rows)

    def _append_embedding(self, pid: int, vec: np.ndarray) -> None:
        assert self._emb is not None
        if self._emb_n == 0 and self._emb.shape[1] != vec.shape[0]:
            self._emb = np.empty((16, vec.shape[0]), dtype=np.float32)
        if vec.shape[0] != self._emb.shape[1]:
            raise ArchiveError(
                f"archive {self.path}: embedding dim {vec.shape[0]} differs from the archive's "
                f"{self._emb.shape[1]}; {fix(self.path)}"
            )
        if self._emb_n == self._emb.shape[0]:
            grown = np.empty((self._emb.shape[0] * 2, self._emb.shape[1]), dtype=np.float32)
            grown[: self._emb_n] = self._emb[: self._emb_n]
            self._emb = grown
        self._emb[self._emb_n] = vec
        self._emb_n += 1
        self._emb_ids.append(pid)

    # ------------------------------------------------------------------ queries
    _LIST_COLS = (
        "id, key, step, parent_id, valid, invalid_reason, text, concepts, majority_answer, "
        "solve_rate, solvability, diversity, length, format, teacher_reward, role, method, "
        "label, label_source, executed_answer, majority_correct"
    )

    @staticmethod
    def _decode(row: dict) -> dict:
        for name in ("concepts", "extra", "metrics", "recipe", "versions"):
            if isinstance(row.get(name), str):
                try:
                    row[name] = json.loads(row[name])
                except ValueError:
                    pass
        if "valid" in row and row["valid"] is not None:
            row["valid"] = bool(row["valid"])
        for name in ("agrees", "majority_correct"):
            if row.get(name) is not None:
                row[name] = bool(row[name])
        row.pop("embedding", None)
        return row

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        cur = self.db.conn.execute(sql, params)
        names = [c[0] for c in cur.description]
        return [self._decode(dict(zip(names, r))) for r in cur.fetchall()]

    def valid_problems(self, limit: int | None = None) -> list[dict]:
        """Valid problems in id order; with limit, the most recent `limit` of them."""
        if limit is None:
            return self._rows(f"SELECT {self._LIST_COLS} FROM problems WHERE valid = 1 ORDER BY id")
        rows = self._rows(
            f"SELECT {self._LIST_COLS} FROM problems WHERE valid = 1 ORDER BY id DESC LIMIT ?",
            (int(limit),),
        )
        return rows[::-1]

    def rewarded_since(self, step: int) -> list[dict]:
        """Valid problems committed at `step` or later that earned their proposer a reward, with
        their program (None without one), oldest first: what the solvers could just solve."""
        return self._rows(
            "SELECT step, text, json_extract(extra, '$.program') AS program, teacher_reward, solve_rate, "
            "COALESCE(json_extract(extra, '$.stretch'), 0) AS stretch "
            "FROM problems WHERE valid = 1 AND teacher_reward > 0 AND step >= ? ORDER BY id", (int(step),))

    def count_valid(self) -> int:
        """Number of valid problems (the reference pool)."""
        return int(self.db.conn.execute("SELECT COUNT(*) FROM problems WHERE valid = 1").fetchone()[0])

    def valid_at(self, positions: list[int]) -> list[dict]:
        """Valid problems by 0-based position in id order: a few rows without reading the pool."""
        sql = f"SELECT {self._LIST_COLS} FROM problems WHERE valid = 1 ORDER BY id LIMIT 1 OFFSET ?"
        return [self._rows(sql, (int(i),))[0] for i in positions]

    def problems(self, limit: int = 50, offset: int = 0, valid_only: bool = False) -> list[dict]:
        """A page of problems in id order (for `minisir archive problems`)."""
        where = "WHERE valid = 1" if valid_only else ""
        return self._rows(
            f"SELECT {self._LIST_COLS} FROM problems {where} ORDER BY id LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        )

    def step_problems(self, step: int) -> list[dict]:
        """One step's problems in id order (what the step's trackers' table is drawn from)."""
        return self._rows(f"SELECT {self._LIST_COLS} FROM problems WHERE step = ? ORDER BY id", (int(step),))

    def problem(self, id: int) -> dict:
        """One problem with its solutions and lineage (parent, grandparent, ... root)."""
        rows = self._rows("SELECT * FROM problems WHERE id = ?", (int(id),))
        if not rows:
            raise ArchiveError(f"archive {self.path} has no problem {id}; list them with `minisir archive problems`")
        prob = rows[0]
        prob["solutions"] = self._rows(
            "SELECT id, step, text, n_tokens, answer, agrees, reward, finish_reason "
            "FROM solutions WHERE problem_id = ? ORDER BY id",
            (int(id),),
        )
        lineage: list[dict] = []
        seen = {prob["id"]}
        parent = prob.get("parent_id")
        while parent is not None and parent not in seen:
            seen.add(parent)
            up = self._rows("SELECT id, step, text, parent_id, valid FROM problems WHERE id = ?", (parent,))
            if not up:
                break
            lineage.append(up[0])
            parent = up[0]["parent_id"]
        prob["lineage"] = lineage
        return prob

    def steps(self) -> list[dict]:
        """All committed steps with their metrics and adapter path."""
        return self._rows(
            "SELECT s.step, s.created_at, s.metrics, a.path AS adapter_path, a.sha256 AS adapter_sha256 "
            "FROM steps s LEFT JOIN adapters a ON a.step = s.step ORDER BY s.step"
        )

    def latest_adapter(self) -> dict | None:
        """Adapter of the highest step that has one (resume loads it)."""
        rows = self._rows("SELECT step, path, sha256 FROM adapters ORDER BY step DESC LIMIT 1")
        return rows[0] if rows else None

    def evals(self) -> list[dict]:
        return self._rows("SELECT * FROM evals ORDER BY id")
