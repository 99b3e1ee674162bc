"""Browse a run's archive in Datasette: read-only, described, with the questions people ask of a run.

Datasette (an optional extra) serves the SQLite file in immutable mode, so browsing never
writes to it, not even -wal/-shm side files. The metadata describes every table and column of
the archive schema (a test keeps it complete), and canned queries answer: the best problems,
one problem's lineage, a problem's votes and solutions, one step's groups, the label audit
and the eval records of a comparison. Embedding blobs stay out of the default views
(minisir.browse_plugin).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .archive import ARCHIVE_NAME
from .archive_schema import SCHEMA, check_file, check_readonly
from .errors import ArchiveError, MinisirError

INSTALL_BROWSE = "pip install 'minisir[browse]'"
HOST = "127.0.0.1"

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "meta": ("Archive bookkeeping.", {
        "key": "schema_version, created_at, or a live tracker's run id (e.g. wandb_run_id) that a resume reuses",
        "value": "its value (text)",
    }),
    "runs": ("The run's identity: its resolved recipe, written at the first step and checked on every resume.", {
        "id": "row id",
        "created_at": "Unix time the run started",
        "seed": "run.seed",
        "recipe": "the resolved recipe as JSON (every section, defaults filled in)",
        "versions": "package versions that started the run, as JSON",
    }),
    "steps": ("One row per committed step; a step and everything it wrote are committed in one transaction.", {
        "step": "step number (0-based; OpenSIR's initial-pool steps come first)",
        "created_at": "Unix time of the commit",
        "metrics": "the step's metrics as JSON: rewards, rates, label audit (label_precision), "
                   "phase seconds, train_* statistics; the names of the step line",
    }),
    "problems": ("Every problem the teacher/proposer wrote (valid or not), the seed, or an RLVR question.", {
        "id": "problem id (parent_id and solutions.problem_id point here)",
        "key": "key within its step: ROUND-INDEX (ROUND is the step, with rN for later rounds)",
        "text": "the problem text (empty when the output did not parse)",
        "concepts": "OpenSIR concepts, a JSON list",
        "parent_id": "the reference problem it was written from (OpenSIR lineage)",
        "step": "step that wrote it",
        "role": "seed, teacher (OpenSIR), proposer (SQLM) or question (RLVR)",
        "method": "opensir, sqlm or rlvr",
        "valid": "1 when admitted (parsed, not a leak, inside the solve-rate window); 0 otherwise",
        "invalid_reason": "why it was not admitted",
        "majority_answer": "the students' majority vote",
        "solve_rate": "share of solutions agreeing with the label (coding: mean pass rate)",
        "n_parsed": "solutions with a parsed answer",
        "n_samples": "solutions sampled",
        "solvability": "OpenSIR solvability reward (peaks in the middle of the window)",
        "diversity": "OpenSIR diversity reward (embedding distance from the pool)",
        "length": "OpenSIR solution-length reward",
        "format": "format reward",
        "teacher_reward": "the teacher's/proposer's total reward",
        "embedding": "MiniLM embedding, float32 blob (hidden in the default views)",
        "embed_model": "the embedder's name",
        "raw": "the teacher's/proposer's raw completion",
        "created_at": "Unix time of the commit",
        "label": "what the solvers were rewarded for matching",
        "label_source": "where the label came from: majority (the vote), executed (the program), known (a dataset)",
        "executed_answer": "the answer the problem's program (or expression) printed",
        "majority_correct": "1 when the majority vote equals the executed answer (the label audit)",
        "extra": "more fields as JSON: program, executed_source, topic, prompt_index, tests, stretch",
    }),
    "solutions": ("Every sampled solution: the votes behind a problem's label.", {
        "id": "solution id",
        "problem_id": "the problem it solves",
        "step": "step that sampled it",
        "text": "the completion",
        "n_tokens": "completion tokens",
        "answer": "the extracted answer (its vote)",
        "agrees": "1 when the answer equals the label",
        "reward": "the student's/solver's reward",
        "finish_reason": "stop, length or loop",
        "extra": "more fields as JSON (data-parallel rank, pass rates)",
    }),
    "adapters": ("The GGUF LoRA adapter each training step hot-swapped into the sampler.", {
        "step": "step that trained it",
        "path": "adapter file, relative to the run directory",
        "sha256": "its digest",
        "created_at": "Unix time of the commit",
    }),
    "evals": ("Held-out evaluations (`minisir eval`, run.eval_every).", {
        "id": "evaluation id",
        "step": "the step whose adapter was evaluated; empty for the base model",
        "benchmark": "benchmark name or JSONL file",
        "metrics": "pass@1, maj@k, greedy with 95% intervals, settings (config) and per-question scores, as JSON",
        "created_at": "Unix time of the evaluation",
    }),
}

_LABEL = "COALESCE(p.label, p.majority_answer)"
QUERIES: dict[str, dict[str, str]] = {
    "best_problems": {
        "title": "Best problems by reward",
        "description": "The 100 valid problems with the highest teacher/proposer reward (RLVR has no teacher).",
        "sql": f"""SELECT p.id, p.step, p.role, p.text, {_LABEL} AS label,
  COALESCE(p.label_source, CASE WHEN p.majority_answer IS NOT NULL THEN 'majority' END)
    AS label_source,
  p.solve_rate, p.solvability, p.diversity, p.teacher_reward
FROM problems p WHERE p.valid = 1 AND p.teacher_reward IS NOT NULL
ORDER BY p.teacher_reward DESC, p.id LIMIT 100""",
    },
    "lineage": {
        "title": "One problem's lineage",
        "description": "The problem (depth 0), the reference it was written from, and so on up to the seed.",
        "sql": """WITH RECURSIVE chain(depth, id) AS (
  SELECT 0, CAST(:id AS INTEGER)
  UNION ALL
  SELECT chain.depth + 1, p.parent_id FROM chain JOIN problems p ON p.id = chain.id
  WHERE p.parent_id IS NOT NULL AND chain.depth < 100000
)
SELECT chain.depth, p.id, p.step, p.role, p.valid, p.text, p.majority_answer, p.solve_rate, p.teacher_reward
FROM chain JOIN problems p ON p.id = chain.id ORDER BY chain.depth""",
    },
    "problem_solutions": {
        "title": "A problem's votes and solutions",
        "description": "Each solution with its answer, the votes that answer got, and whether it agrees with the label.",
        "sql": f"""SELECT s.id, s.step, s.answer, COUNT(*) OVER (PARTITION BY s.answer) AS votes, {_LABEL} AS label,
  s.agrees, s.reward, s.n_tokens, s.finish_reason, s.text
FROM solutions s JOIN problems p ON p.id = s.problem_id
WHERE s.problem_id = CAST(:id AS INTEGER) ORDER BY votes DESC, s.id""",
    },
    "step_groups": {
        "title": "One step's groups",
        "description": "Each problem of the step under its round and teacher group (OpenSIR: the reference; "
                       "SQLM: the prompt), with its student group's size and rewards.",
        "sql": """SELECT substr(p.key, 1, instr(p.key, '-') - 1) AS round,
  COALESCE('reference ' || p.parent_id, 'prompt ' || json_extract(p.extra, '$.prompt_index'), 'none')
    AS teacher_group,
  p.id, p.role, p.valid, p.invalid_reason, p.text, p.teacher_reward, p.solve_rate,
  COUNT(s.id) AS solutions, AVG(s.reward) AS student_reward_mean, MIN(s.reward) AS student_reward_min,
  MAX(s.reward) AS student_reward_max, SUM(s.agrees) AS agreeing
FROM problems p LEFT JOIN solutions s ON s.problem_id = p.id
WHERE p.step = CAST(:step AS INTEGER)
GROUP BY p.id ORDER BY round, teacher_group, p.id""",
    },
    "label_audit": {
        "title": "Label audit per step",
        "description": "Wherever an executed answer exists, is the majority vote right? "
                       "(empty for runs without executed answers)",
        "sql": """SELECT step, COUNT(*) AS audited, SUM(majority_correct) AS vote_right,
  AVG(majority_correct) AS label_precision
FROM problems WHERE majority_correct IS NOT NULL
GROUP BY step ORDER BY step""",
    },
    "eval_comparison": {
        "title": "Eval records of a comparison",
        "description": "A benchmark's evaluations (all, when empty), records with the same settings side by side: "
                       "`minisir eval --compare base,latest` stores the base and the step with equal settings.",
        "sql": """SELECT id, CASE WHEN step IS NULL THEN 'base' ELSE 'step ' || step END AS model, benchmark,
  json_extract(metrics, '$.n_questions') AS n_questions, json_extract(metrics, '$.config.k') AS k,
  json_extract(metrics, '$.config.seed') AS seed, json_extract(metrics, '$.config.temperature') AS temperature,
  json_extract(metrics, '$."pass@1"') AS pass_at_1, json_extract(metrics, '$."pass@1_ci"[0]') AS pass_at_1_low,
  json_extract(metrics, '$."pass@1_ci"[1]') AS pass_at_1_high, json_extract(metrics, '$."maj@k"') AS maj_at_k,
  json_extract(metrics, '$.greedy') AS greedy, created_at
FROM evals WHERE :benchmark = '' OR benchmark = :benchmark
ORDER BY benchmark, n_questions, k, seed, temperature, id""",
    },
}


def schema_columns() -> dict[str, list[str]]:
    """Tables and columns of the archive schema, read from a fresh in-memory archive."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


def metadata(database: str, title: str) -> dict[str, Any]:
    """Datasette metadata: every table and column described, and the canned queries."""
    tables = {}
    for table, columns in schema_columns().items():
        about, described = TABLES.get(table, ("", {}))
        tables[table] = {"description": about, "columns": {c: described.get(c, "") for c in columns}}
    tables["problems"]["sort_desc"] = "id"
    return {
        "title": title,
        "description": "A minisir run's archive, read-only. The canned queries below answer the usual questions; "
                       "embeddings are hidden from the default views.",
        "databases": {database: {"tables": tables, "queries": QUERIES}},
    }


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def archive_path(run: Path) -> Path:
    """The archive file of a run directory (or the file itself), refused in one line when it is
    missing, corrupt or not an archive. The checks open it immutable: nothing is written."""
    path = run / ARCHIVE_NAME if run.is_dir() else run
    if not path.is_file():
        raise ArchiveError(f"{path} does not exist; pass a run directory made by `minisir run`")
    check_file(path)
    if not path.stat().st_size or check_readonly(path) == 0:
        raise ArchiveError(f"archive {path} is empty (no step was ever committed); check the run directory")
    return path


def browse(run: Path, port: int = 8001, open_browser: bool = True) -> None:
    """Serve the run's archive read-only on 127.0.0.1:port until interrupted."""
    try:
        import uvicorn
        from datasette.app import Datasette
        from datasette.plugins import pm
    except ImportError:
        raise MinisirError(f"browsing needs Datasette: {INSTALL_BROWSE}") from None
    from . import browse_plugin

    path = archive_path(Path(run))
    wal = Path(str(path) + "-wal")
    if wal.exists() and wal.stat().st_size:
        print(f"note: {path}-wal exists (a run is writing, or was killed); immutable mode shows the archive "
              "as of its last checkpoint", file=sys.stderr)
    port = port or free_port()
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise MinisirError(f"port {port} on {HOST} is in use; pass another --port, or --port 0 for a free one") from None
    database = path.stem
    if not pm.is_registered(browse_plugin):
        pm.register(browse_plugin, name="minisir-browse")
    ds = Datasette([], immutables=[str(path)], metadata=metadata(database, f"minisir run {path.parent.name}"),
                   settings={"sql_time_limit_ms": 5000})
    asyncio.run(ds.invoke_startup())
    url = f"http://{HOST}:{port}/{database}"
    print(f"browsing {path} (read-only) at {url}; Ctrl-C stops", file=sys.stderr)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    uvicorn.run(ds.app(), host=HOST, port=port, log_level="warning", lifespan="on", workers=1)
