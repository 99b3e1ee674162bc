"""`minisir bench archive`: diversity scoring and step commits as the archive grows.

Synthetic archives of growing size (bulk-filled by _populate), the same operations timed
at each size, and growth per 10x against the smallest size as the baseline.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .system import _ratio, high_water_mb


def _populate(path: Path, n: int, dim: int, solutions_per_problem: int, seed: int, per_step: int = 16) -> float:
    """Bulk-fill a fresh archive with n synthetic problems (+ embeddings, solutions); returns seconds.

    Rows go in through executemany in one transaction: building 100k problems through
    commit_step one step at a time would take far longer than the thing being measured.
    """
    from ..archive import Archive

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    arc = Archive.open(path)
    arc.ensure_run({"model": {"gguf": "synthetic"}, "method": {"name": "opensir"}}, {}, seed)
    conn = arc.db.conn
    n_steps = max(1, math.ceil(n / per_step))
    block = 10_000
    with arc.db.atomic():
        conn.executemany("INSERT INTO steps (step, created_at, metrics) VALUES (?, ?, '{}')",
                         [(s, time.time()) for s in range(n_steps)])
        pid = 0
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            emb = rng.standard_normal((hi - lo, dim)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            rows = []
            for i in range(lo, hi):
                step = i // per_step
                rows.append((f"{step}-0-{i % per_step}", f"Synthetic problem {i}: what is {i} + {i % 97}?",
                             '["arithmetic"]', step, "teacher", "opensir", 1, str(2 * i % 97), 0.75, 0.9, 0.6,
                             0.5, 1.0, 0.8, emb[i - lo].tobytes(), "synthetic", time.time()))
            conn.executemany(
                "INSERT INTO problems (key, text, concepts, step, role, method, valid, majority_answer, solve_rate, "
                "solvability, diversity, length, format, teacher_reward, embedding, embed_model, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if solutions_per_problem:
                first = pid + 1
                sols = [(first + (i - lo), (i // per_step), f"Step by step ... so the answer is \\boxed{{{i}}}.",
                         24, str(i), 1, 1.0, "stop")
                        for i in range(lo, hi) for _ in range(solutions_per_problem)]
                conn.executemany("INSERT INTO solutions (problem_id, step, text, n_tokens, answer, agrees, reward, "
                                 "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", sols)
            pid += hi - lo
    # Fold the bulk load into the main file now, so no commit below pays for that checkpoint.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    arc.close()
    return time.perf_counter() - t0


def _step_rows(step: int, rng: np.random.Generator, new: int, per_problem: int, dim: int) -> tuple[list, list]:
    """What one OpenSIR step commits: `new` problems with embeddings and `per_problem` solutions each."""
    emb = rng.standard_normal((new, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    problems = [{"key": f"{step}-0-{j}", "text": f"New problem {step}/{j}", "concepts": ["algebra"],
                 "parent_id": 1, "role": "teacher", "method": "opensir", "valid": True, "majority_answer": "3",
                 "solve_rate": 0.75, "solvability": 0.9, "diversity": 0.6, "length": 0.5, "format": 1.0,
                 "teacher_reward": 0.8, "embedding": emb[j], "embed_model": "synthetic", "raw": "<problem>..."}
                for j in range(new)]
    solutions = [{"problem_key": f"{step}-0-{j}", "text": "so the answer is \\boxed{3}.", "n_tokens": 40,
                  "answer": "3", "agrees": True, "reward": 1.0, "finish_reason": "stop"}
                 for j in range(new) for _ in range(per_problem)]
    return problems, solutions


def _growth(sizes: list[int], values: list[float]) -> list[float | None]:
    """Per-10x growth factors t(N2)/t(N1) scaled to a 10x size step."""
    out = []
    for (n1, t1), (n2, t2) in zip(zip(sizes, values), zip(sizes[1:], values[1:])):
        if t1 <= 0 or n2 <= n1:
            out.append(None)
            continue
        out.append(round((t2 / t1) ** (1.0 / math.log10(n2 / n1)), 2))
    return out


def bench_archive(
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000),
    new: int = 16,
    solutions: int = 128,
    dim: int = 384,
    top_k: int = 5,
    solutions_per_archived: int = 8,
    repeats: int = 5,
    seed: int = 0,
    workdir: Path | None = None,
) -> dict:
    """Diversity scoring and step commit against archives of growing size.

    For each size N: a temp archive bulk-filled with N problems (unit-norm random
    embeddings of `dim`, the bundled embedder's size) and their solutions; then the
    median of `repeats` diversity computations (embed.diversity_scores of `new` rows vs
    the N archived ones, as play_opensir calls it) and of `repeats` real commit_step calls
    (`new` problems + `solutions` solutions + embeddings + an adapter row). The baseline
    of each figure is the same operation at the smallest N, measured in the same run.
    """
    from ..archive import Archive
    from ..embed import diversity_scores

    sizes = sorted(int(s) for s in sizes)
    per_problem = max(1, solutions // max(new, 1))
    rng = np.random.default_rng(seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="minisir-bench-archive-", dir=workdir) as tmp:
        for n in sizes:
            path = Path(tmp) / f"archive-{n}.sqlite"
            fill_s = _populate(path, n, dim, solutions_per_archived, seed)
            arc = Archive.open(path)
            t0 = time.perf_counter()
            ref, _ = arc.embedding_matrix()
            load_s = time.perf_counter() - t0
            ref = ref.copy()
            pool_times = []
            for _ in range(2):  # the first read also warms SQLite's page cache
                t0 = time.perf_counter()
                pool = arc.valid_problems()
                pool_times.append(time.perf_counter() - t0)
            pool_s = min(pool_times)
            new_emb = rng.standard_normal((new, dim)).astype(np.float32)
            new_emb /= np.linalg.norm(new_emb, axis=1, keepdims=True)
            diversity_scores(new_emb, ref, top_k)  # warm-up (BLAS threads, page faults)
            div_times = []
            for _ in range(max(20, 4 * repeats)):  # milliseconds each: many tries are cheap
                t0 = time.perf_counter()
                scores = diversity_scores(new_emb, ref, top_k)
                div_times.append(time.perf_counter() - t0)
            assert scores.shape == (new,)
            commit_times = []
            first_step = arc.last_step() + 1
            for r in range(repeats):
                problems, sols = _step_rows(first_step + r, rng, new, per_problem, dim)
                step = {"step": first_step + r, "seconds_step": 1.0, "teacher_reward_mean": 0.5}
                adapter = {"path": f"adapters/step-{first_step + r:06d}.gguf", "sha256": "0" * 64}
                t0 = time.perf_counter()
                arc.commit_step(step, problems, sols, adapter)
                commit_times.append(time.perf_counter() - t0)
            arc.close()
            rows.append({
                "archived": n, "populate_seconds": round(fill_s, 2), "file_mb": round(path.stat().st_size / 2**20, 1),
                "embedding_load_seconds": round(load_s, 4), "valid_problems_seconds": round(pool_s, 4),
                "valid_problems_rows": len(pool),
                "diversity_ms": round(1e3 * min(div_times), 3),
                "diversity_median_ms": round(1e3 * statistics.median(div_times), 3),
                "diversity_ns_per_pair": round(1e9 * min(div_times) / (new * (n + new)), 2),
                "commit_ms": round(1e3 * min(commit_times), 3),
                "commit_median_ms": round(1e3 * statistics.median(commit_times), 3),
            })
            path.unlink(missing_ok=True)
    ns = [r["archived"] for r in rows]
    div = [r["diversity_ms"] for r in rows]
    com = [r["commit_ms"] for r in rows]
    pool = [r["valid_problems_seconds"] for r in rows]
    g_div, g_com, g_pool = _growth(ns, div), _growth(ns, com), _growth(ns, pool)
    overall = {"diversity": _growth([ns[0], ns[-1]], [div[0], div[-1]])[0],
               "commit": _growth([ns[0], ns[-1]], [com[0], com[-1]])[0],
               "valid_problems": _growth([ns[0], ns[-1]], [pool[0], pool[-1]])[0]}
    worst = [g for g in (overall["diversity"], overall["commit"]) if g is not None]
    return {
        "benchmark": "archive",
        "new_problems": new,
        "solutions_per_step": per_problem * new,
        "embedding_dim": dim,
        "top_k": top_k,
        "solutions_per_archived_problem": solutions_per_archived,
        "repeats": repeats,
        "sizes": rows,
        "baseline": f"the same operation at N={ns[0]}",
        "diversity_ratio_vs_smallest": [_ratio(d, div[0]) for d in div],
        "commit_ratio_vs_smallest": [_ratio(c, com[0]) for c in com],
        "growth_per_10x": {"diversity": g_div, "commit": g_com, "valid_problems": g_pool},
        "growth_per_10x_smallest_to_largest": overall,
        "no_worse_than_linear": bool(worst) and max(worst) <= 12.0,
        "peak_rss_mb": round(high_water_mb(), 1),
        "notes": "diversity_ms/commit_ms are the best of `repeats` (least disturbed on a shared machine; medians "
                 "beside them). growth_per_10x = t(10N) / t(N) (10 = linear, 1 = constant); diversity is O(N) by nature (every "
                 "archived row is compared): diversity_ns_per_pair should stay flat. Millisecond timings on a shared "
                 "machine are noisy, so no_worse_than_linear judges the smallest-to-largest growth, allowing 20% "
                 "for noise. valid_problems is what "
                 "play_opensir reads from the archive every step to pick references.",
    }
