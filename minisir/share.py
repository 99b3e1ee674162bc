"""Share what a run made, in the formats other tools read.

- `archive export`: the run's valid problems as JSONL or Parquet rows that
  `datasets.load_dataset("json" | "parquet", data_files=...)` reads as they are;
- `export --adapter-only`: the newest trained LoRA as a PEFT directory (what transformers,
  PEFT and vLLM load) with a short model card.

Every file is written under a temporary name beside its target and renamed into place, so a
failure never leaves half a file where a reader would take it for a whole one (minisir.atomic).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .archive import ARCHIVE_NAME, Archive
from .atomic import atomic_dir, atomic_file
from .errors import ArchiveError, MinisirError

FORMATS = (".jsonl", ".parquet")
INSTALL_SHARE = "pip install 'minisir[share]'"
# One row per valid problem. Types are fixed so every row of a file has the same schema
# (pyarrow infers JSON types per block; Parquet gets this schema explicitly).
COLUMNS: dict[str, str] = {
    "id": "int64", "key": "string", "step": "int64", "role": "string", "method": "string",
    "problem": "string", "concepts": "list<string>",
    "label": "string", "label_source": "string", "majority_answer": "string", "executed_answer": "string",
    "majority_correct": "bool", "solve_rate": "float64", "n_samples": "int64", "teacher_reward": "float64",
    "parent_id": "int64", "lineage": "list<int64>", "solutions": "list<string>",
}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MAX_EVALS = 20  # evaluations listed in a model card


def open_run(run: Path) -> Archive:
    """The run's archive, read-only; a missing run is one line naming the path."""
    path = run / ARCHIVE_NAME if run.is_dir() else run
    if not path.exists():
        raise ArchiveError(f"{path} does not exist; pass a run directory made by `minisir run`")
    return Archive.open(path, readonly=True)


# --------------------------------------------------------------------------- problems


def _text(x: Any) -> str | None:
    return None if x is None else str(x)


def _concepts(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        value = [raw]
    return [str(c) for c in value] if isinstance(value, list) else [str(value)]


def _lineage(pid: int, parents: dict[int, int | None]) -> list[int]:
    """Ancestor ids, parent first, up to the root (a cycle, which should not exist, stops it)."""
    out: list[int] = []
    seen = {pid}
    parent = parents.get(pid)
    while parent is not None and parent not in seen:
        out.append(parent)
        seen.add(parent)
        parent = parents.get(parent)
    return out


def problem_rows(arc: Archive, min_solve: float | None = None, max_solve: float | None = None,
                 progress: bool = False) -> Iterator[dict[str, Any]]:
    """The export rows of a run's valid problems, in id order.

    The label is the stored `label` (with its `label_source`: majority, executed or known);
    archives written before executed labels have only the majority vote, which is then the
    label. `solutions` are the texts of the solutions that agree with the label.
    """
    from tqdm import tqdm

    conn = arc.db.conn
    where, params = ["valid = 1"], []
    if min_solve is not None:
        where.append("solve_rate >= ?")
        params.append(float(min_solve))
    if max_solve is not None:
        where.append("solve_rate <= ?")
        params.append(float(max_solve))
    cond = " AND ".join(where)
    try:
        total = conn.execute(f"SELECT COUNT(*) FROM problems WHERE {cond}", params).fetchone()[0]
        parents = dict(conn.execute("SELECT id, parent_id FROM problems").fetchall())
        cur = conn.execute(
            "SELECT id, key, step, role, method, text, concepts, majority_answer, solve_rate, n_samples, "
            "teacher_reward, parent_id, label, label_source, executed_answer, majority_correct "
            f"FROM problems WHERE {cond} ORDER BY id", params)
        for row in tqdm(cur, total=total, desc="problems", unit="problem",
                        disable=None if progress else True):  # None: only on a terminal
            (pid, key, step, role, method, text, concepts, majority, rate, n, reward, parent, label, source,
             executed, correct) = row
            if source is None:  # written before executed labels: the vote is the label
                label = majority
            if label is not None and source is None:
                source = "majority"
            solutions = [t for (t,) in conn.execute(
                "SELECT text FROM solutions WHERE problem_id = ? AND agrees = 1 ORDER BY id", (pid,))]
            yield {
                "id": pid, "key": key, "step": step, "role": role, "method": method, "problem": text,
                "concepts": _concepts(concepts), "label": _text(label), "label_source": source,
                "majority_answer": _text(majority), "executed_answer": _text(executed),
                "majority_correct": None if correct is None else bool(correct), "solve_rate": rate,
                "n_samples": n, "teacher_reward": reward, "parent_id": parent,
                "lineage": _lineage(pid, parents), "solutions": solutions,
            }
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"archive {arc.path} cannot be read ({exc}); the file is damaged, "
                           "export from a copy made while it was healthy") from exc


def _arrow_schema():
    try:
        import pyarrow as pa
    except ImportError:
        raise MinisirError(f"writing Parquet needs pyarrow: {INSTALL_SHARE}") from None
    kinds = {"int64": pa.int64(), "string": pa.string(), "bool": pa.bool_(), "float64": pa.float64(),
             "list<string>": pa.list_(pa.string()), "list<int64>": pa.list_(pa.int64())}
    return pa.schema([(name, kinds[kind]) for name, kind in COLUMNS.items()])


def export_problems(run: Path, out: Path, min_solve: float | None = None, max_solve: float | None = None,
                    progress: bool = True) -> int:
    """Write the run's valid problems to OUT (.jsonl or .parquet); return the number of rows."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise MinisirError(f"{out}: unknown format {suffix or '(no suffix)'!r}; name the file .jsonl or .parquet")
    if min_solve is not None and max_solve is not None and min_solve > max_solve:
        raise MinisirError(f"--min-solve {min_solve} is above --max-solve {max_solve}; swap them")
    schema = _arrow_schema() if suffix == ".parquet" else None  # a missing pyarrow fails before any work
    with open_run(Path(run)) as arc:
        rows = problem_rows(arc, min_solve, max_solve, progress=progress)
        with atomic_file(out) as tmp:
            return _write_jsonl(rows, tmp) if schema is None else _write_parquet(rows, tmp, schema)


def _write_jsonl(rows: Iterator[dict], path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_parquet(rows: Iterator[dict], path: Path, schema, batch: int = 1000) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        chunk: list[dict] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                n, chunk = n + len(chunk), []
        if chunk or not n:  # an empty export is still a readable file with the schema
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
    return n


# --------------------------------------------------------------------------- adapter


def trained_state(run: Path, last_step: int) -> tuple[Path, int]:
    """(state directory, step) of the newest step that trained, at or before the last committed step."""
    from .loop import latest_state

    state = latest_state(run / "state", last_step)
    if state is None:
        raise MinisirError(f"{run} has no trained step yet (no trainer state); run until a step trains")
    return state, int(state.name[5:])


def _eval_lines(evals: list[dict]) -> list[str]:
    """A Markdown table of the archive's held-out evaluations (pass@1 with its 95% interval)."""
    def pct(x: Any) -> str:
        return "-" if not isinstance(x, (int, float)) else f"{100 * x:.1f}"

    lines = ["| model | benchmark | questions | samples | pass@1 % (95% CI) | maj@k % | greedy % |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in evals:
        m = e.get("metrics") if isinstance(e.get("metrics"), dict) else {}
        ci = m.get("pass@1_ci") or []
        interval = f" ({pct(ci[0])} to {pct(ci[1])})" if len(ci) == 2 else ""
        model = "base" if e.get("step") is None else f"step {e['step']}"
        lines.append(f"| {model} | {e['benchmark']} | {m.get('n_questions', '-')} | "
                     f"{(m.get('config') or {}).get('k', '-')} | {pct(m.get('pass@1'))}{interval} | "
                     f"{pct(m.get('maj@k'))} | {pct(m.get('greedy'))} |")
    return lines


def model_card(recipe: dict, run: Path, trained: int, steps: int, updates: int, evals: list[dict],
               lora: dict) -> str:
    """The README.md of an adapter export: what it was trained from, how, for how long, and how it scored."""
    model, method, trainer = recipe.get("model", {}), recipe.get("method", {}), recipe.get("trainer", {})
    base = model.get("hf_dir") or model.get("gguf") or "bundled"
    if model.get("hf_dir"):
        about = f"`{base}` (an HF checkpoint)"
    else:
        what = "the bundled Gemma 3 270M Q4_K_M GGUF" if base == "bundled" else "a GGUF"
        about = f"`{base}` ({what}; the LoRA was trained on its dequantized weights)"
    args = repr(model.get("gguf") or "bundled") + (f", hf_dir={model['hf_dir']!r}" if model.get("hf_dir") else "")
    name = method.get("name", "?")
    how = f"`{name}`" + (f", labels `{method['labels']}`" if method.get("labels") else "")
    if method.get("topic"):
        how += f", topic: {method['topic']}"
    lines = [
        "---", "library_name: peft", "tags: [minisir, lora, grpo, self-play]", "---", "",
        f"# minisir LoRA: {name} on {base}", "",
        f"- **Base model**: {about}",
        f"- **Recipe**: method {how}; run `{run.name}`, seed {recipe.get('run', {}).get('seed', '?')}",
        f"- **Steps**: trained through step {trained} of {steps} committed "
        f"({updates} step(s) updated the LoRA)",
        f"- **LoRA**: rank {lora.get('r')}, alpha {lora.get('lora_alpha')}, targets "
        f"{', '.join(sorted(lora.get('target_modules') or []))}; learning rate {trainer.get('learning_rate')}",
        "",
        "## Held-out results", "",
    ]
    if evals:
        lines += _eval_lines(evals[-MAX_EVALS:])
        if len(evals) > MAX_EVALS:
            lines += ["", f"The {MAX_EVALS} newest of {len(evals)} evaluations; all are in the archive's `evals` table."]
    else:
        lines.append("Not evaluated (`minisir eval RUN --compare base,latest` adds results).")
    lines += [
        "", "## Use", "",
        "```python",
        "from peft import PeftModel",
        "from minisir.hf_model import load_hf_model  # the base exactly as it was trained (dequantized GGUF)",
        "",
        f"base = load_hf_model({args})",
        "model = PeftModel.from_pretrained(base, 'THIS_DIRECTORY')",
        "```", "",
        "vLLM: serve the same base with `--enable-lora --lora-modules minisir=THIS_DIRECTORY`. "
        "The full recipe is in the run's archive (`archive.sqlite`, table `runs`).", "",
    ]
    return "\n".join(lines)


def export_adapter(run: Path, out_dir: Path) -> tuple[int, int]:
    """Write the newest trained step's LoRA as a PEFT directory with a model card; return (trained, last).

    The trainer's own save_pretrained output is copied byte for byte (no model is loaded),
    with base_model_name_or_path set to the recipe's model. The directory appears whole:
    it is assembled beside OUT_DIR and renamed into place.
    """
    run, out_dir = Path(run), Path(out_dir)
    with open_run(run) as arc:
        info = arc.run_info()
        if info is None:
            raise ArchiveError(f"{arc.path} holds no run yet; start one with `minisir run RECIPE`")
        last = arc.last_step()
        state, trained = trained_state(run, last)
        updates = arc.db.conn.execute("SELECT COUNT(*) FROM adapters WHERE step <= ?", (trained,)).fetchone()[0]
        evals = arc.evals()
    source = state / "adapter"
    missing = [f for f in ADAPTER_FILES if not (source / f).is_file()]
    if missing:
        raise MinisirError(f"trainer state {source} lacks {', '.join(missing)}; the state is damaged, "
                           "resume the run to write a new one")
    if out_dir.exists() and not out_dir.is_dir():
        raise MinisirError(f"{out_dir} is a file; pass a directory for the PEFT adapter")
    if out_dir.exists() and set(os.listdir(out_dir)) - {*ADAPTER_FILES, "README.md"}:
        raise MinisirError(f"{out_dir} exists and holds other files; pass a new or empty directory")
    recipe = info["recipe"]
    config = json.loads((source / "adapter_config.json").read_text())
    model = recipe.get("model", {})
    config["base_model_name_or_path"] = str(model.get("hf_dir") or model.get("gguf") or "bundled")
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(source / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(model_card(recipe, run.resolve(), trained, last + 1, updates, evals, config))
    return trained, last
