"""Sampling benchmarks: `minisir bench sampler` and `minisir bench server`.

bench_sampler: the batched llama.cpp sampler vs a one-sequence-at-a-time `Llama.__call__`
loop, with the memory-bandwidth and compute rooflines. bench_server: an OpenAI-compatible server
(`sampler.backend: openai`) vs the in-process batched sampler on the same prompts and n.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tqdm import tqdm

from .system import compute_roofline, device_name, high_water_mb, roofline

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


def bench_sampler(
    model: Path,
    prompts: int = 4,
    n: int = 4,
    max_tokens: int = 64,
    n_parallel: int = 16,
    n_threads: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> dict:
    """Batched sampler vs a one-sequence-at-a-time loop over `Llama.__call__`.

    The batched call's time is split into prompt decoding, step decoding, numpy sampling and
    the rest, so Python-side cost is measured against llama_decode in the same run.
    """
    from llama_cpp import Llama

    from ..llama_runtime import amx_safe_defaults

    texts = _bench_texts(prompts)
    total = prompts * n

    out, batched_s, split = _in_process(model, texts, n, max_tokens, n_parallel, n_threads, seed, "batched",
                                        temperature=temperature, top_p=top_p)
    batched_tokens = sum(len(c.token_ids) for c in out)

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
    result = {
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
        # where the batched call's time went: llama_decode of prompts and of steps, numpy sampling
        # over the vocabulary, and the rest (Python bookkeeping, detokenising, stop strings)
        "batched_split_s": split,
        "sampling_share": round(split["sample_s"] / batched_s, 3) if batched_s else None,
        "temperature": temperature,
        "top_p": top_p,
    }
    result.update(roofline(model, batched_tps, seq_tps, min(n_parallel, total)))
    result.update(compute_roofline(model, batched_tps, seq_tps, min(n_parallel, total), n_threads))
    result["peak_rss_mb"] = round(high_water_mb(), 1)
    result["gpu_peak_mb"] = None  # llama.cpp allocates outside torch; see nvidia-smi on a GPU
    return result


def _bench_texts(prompts: int) -> list[str]:
    """`prompts` benchmark prompts, cycling through BENCH_PROMPTS."""
    return [BENCH_PROMPTS[i % len(BENCH_PROMPTS)] for i in range(prompts)]


def _in_process(model: Path, texts: list[str], n: int, max_tokens: int, n_parallel: int, n_threads: int | None,
                seed: int, desc: str, temperature: float = 1.0, top_p: float = 1.0) -> tuple[list, float, dict]:
    """`_timed_generate` on a batched Sampler sized for the work, closed afterwards; also the time split."""
    from ..sampler import Sampler

    with Sampler(model, n_ctx=max(4096, n_parallel * (max_tokens + 128)), n_parallel=n_parallel,
                 n_threads=n_threads) as sampler:
        sampler.generate(texts[:1], n=1, max_tokens=4, seed=seed)  # warm-up
        before = dict(sampler.timings)
        out, seconds = _timed_generate(sampler, texts, n, max_tokens, seed, desc, temperature, top_p)
        split = {k: round(v - before[k], 3) for k, v in sampler.timings.items()}
        split["other_s"] = round(seconds - sum(split.values()), 3)
        return out, seconds, split


def _timed_generate(sampler, texts: list[str], n: int, max_tokens: int, seed: int, desc: str,
                    temperature: float = 1.0, top_p: float = 1.0) -> tuple[list, float]:
    """One generate call over all prompts, with a token progress bar; (completions, seconds)."""
    t0 = time.perf_counter()
    with tqdm(total=len(texts) * n * max_tokens, desc=desc, unit="tok", leave=False) as bar:
        out = sampler.generate(texts, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                               seed=seed, progress=bar.update)
    return [c for group in out for c in group], time.perf_counter() - t0


def bench_server(
    url: str,
    model: Path,
    served_model: str | None = None,
    prompts: int = 4,
    n: int = 4,
    max_tokens: int = 64,
    max_concurrency: int = 8,
    n_parallel: int = 16,
    n_threads: int | None = None,
    seed: int = 0,
) -> dict:
    """`sampler.backend: openai` vs the in-process batched sampler on the same prompts and n.

    The server is measured first, then the in-process sampler while the server idles: on one
    machine they share its cores and memory bandwidth, so the ratio is what moving sampling to
    that server buys (or costs) the run. Also reports how many server completions came back with
    the sampled ids' log-probs, which the trainer's importance weights need.
    """
    from ..server_sampler import ServerSampler

    texts = _bench_texts(prompts)
    with ServerSampler(url, model, served_model=served_model, max_concurrency=max_concurrency) as remote:
        served = remote.served_model
        remote.generate(texts[:1], n=1, max_tokens=4, seed=seed)  # warm-up
        server_out, server_s = _timed_generate(remote, texts, n, max_tokens, seed, "server")
    local_out, local_s, _ = _in_process(model, texts, n, max_tokens, n_parallel, n_threads, seed, "in-process")

    server_tokens = sum(len(c.token_ids) for c in server_out)
    local_tokens = sum(len(c.token_ids) for c in local_out)
    server_tps, local_tps = server_tokens / server_s, local_tokens / local_s
    return {
        "benchmark": "server",
        "url": url,
        "served_model": served,
        "model": model.name,
        "device": device_name(),
        "prompts": prompts,
        "n_per_prompt": n,
        "max_tokens": max_tokens,
        "max_concurrency": max_concurrency,
        "parallel_sequences": n_parallel,
        "server_tokens": server_tokens,
        "server_seconds": round(server_s, 3),
        "server_tokens_per_s": round(server_tps, 2),
        "server_completions_with_logprobs": sum(bool(c.logprobs) for c in server_out),
        "completions": len(server_out),
        "in_process_tokens": local_tokens,
        "in_process_seconds": round(local_s, 3),
        "in_process_tokens_per_s": round(local_tps, 2),
        "server_vs_in_process": round(server_tps / local_tps, 2),
        "peak_rss_mb": round(high_water_mb(), 1),
    }
