"""Benchmarks that compare minisir against what a user would do instead, in one run.

Absolute times on shared machines mean little, so every figure comes with a baseline
measured in the same process on the same inputs, and the ratio is the headline.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

from tqdm import tqdm

BENCH_PROMPTS = [
    "Question: A farmer has 12 cows and buys 7 more. How many cows does he have?\nAnswer:",
    "Question: What is the sum of the first ten positive integers?\nAnswer:",
    "Question: A train travels 60 km in 45 minutes. What is its speed in km/h?\nAnswer:",
    "Question: If 3x + 5 = 20, what is x?\nAnswer:",
    "Question: A rectangle is 8 cm long and 5 cm wide. What is its area?\nAnswer:",
    "Question: Tom reads 15 pages a day. How many pages does he read in two weeks?\nAnswer:",
    "Question: What is 144 divided by 12?\nAnswer:",
    "Question: A shirt costs $20 and is on sale for 25% off. What is the sale price?\nAnswer:",
]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name() -> str:
    """The hardware the sampler ran on, in words."""
    from .sampler import _llama

    if _llama().llama_supports_gpu_offload():
        try:
            import torch

            if torch.cuda.is_available():
                return f"GPU {torch.cuda.get_device_name(0)}"
        except ImportError:
            pass
        return "GPU (llama.cpp offload)"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def bench_sampler(
    model: Path,
    prompts: int = 4,
    n: int = 4,
    max_tokens: int = 64,
    n_parallel: int = 16,
    n_threads: int | None = None,
    seed: int = 0,
) -> dict:
    """Batched sampler vs a one-sequence-at-a-time loop over `Llama.__call__`."""
    from llama_cpp import Llama

    from .sampler import Sampler, amx_safe_defaults

    texts = [BENCH_PROMPTS[i % len(BENCH_PROMPTS)] for i in range(prompts)]
    total = prompts * n

    sampler = Sampler(model, n_ctx=max(4096, n_parallel * (max_tokens + 128)), n_parallel=n_parallel,
                      n_threads=n_threads)
    sampler.generate(texts[:1], n=1, max_tokens=4, seed=seed)  # warm-up
    t0 = time.perf_counter()
    with tqdm(total=total * max_tokens, desc="batched", unit="tok", leave=False) as bar:
        out = sampler.generate(texts, n=n, max_tokens=max_tokens, temperature=1.0, seed=seed,
                               progress=bar.update)
    batched_s = time.perf_counter() - t0
    batched_tokens = sum(len(c.token_ids) for group in out for c in group)
    sampler.close()

    with amx_safe_defaults():
        llm = Llama(str(model), n_ctx=2048, n_threads=n_threads or os.cpu_count(), verbose=False,
                    seed=seed)
    llm(texts[0], max_tokens=4)  # warm-up
    seq_tokens = 0
    t0 = time.perf_counter()
    for i in tqdm(range(total), desc="sequential", leave=False):
        res = llm(texts[i // n], max_tokens=max_tokens, temperature=1.0, top_p=1.0, top_k=0,
                  seed=seed + i)
        seq_tokens += res["usage"]["completion_tokens"]
    seq_s = time.perf_counter() - t0
    del llm

    batched_tps = batched_tokens / batched_s
    seq_tps = seq_tokens / seq_s
    return {
        "benchmark": "sampler",
        "model": model.name,
        "device": device_name(),
        "prompts": prompts,
        "n_per_prompt": n,
        "parallel_sequences": n_parallel,
        "max_tokens": max_tokens,
        "batched_tokens": batched_tokens,
        "batched_seconds": round(batched_s, 3),
        "batched_tokens_per_s": round(batched_tps, 2),
        "sequential_tokens": seq_tokens,
        "sequential_seconds": round(seq_s, 3),
        "sequential_tokens_per_s": round(seq_tps, 2),
        "speedup_vs_sequential": round(batched_tps / seq_tps, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
