"""Benchmarks that compare minisir against what a user would do instead, in one run.

Absolute times on shared machines mean little, so every figure comes with a baseline
measured in the same process on the same inputs, and the ratio is the headline.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

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

    from .sampler import amx_safe_defaults

    texts = _bench_texts(prompts)
    total = prompts * n

    out, batched_s = _in_process(model, texts, n, max_tokens, n_parallel, n_threads, seed, "batched")
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
    }
    result.update(roofline(model, batched_tps, seq_tps, min(n_parallel, total)))
    result["peak_rss_mb"] = round(high_water_mb(), 1)
    result["gpu_peak_mb"] = None  # llama.cpp allocates outside torch; see nvidia-smi on a GPU
    return result


def _bench_texts(prompts: int) -> list[str]:
    """`prompts` benchmark prompts, cycling through BENCH_PROMPTS."""
    return [BENCH_PROMPTS[i % len(BENCH_PROMPTS)] for i in range(prompts)]


def _in_process(model: Path, texts: list[str], n: int, max_tokens: int, n_parallel: int, n_threads: int | None,
                seed: int, desc: str) -> tuple[list, float]:
    """`_timed_generate` on a batched Sampler sized for the work, closed afterwards."""
    from .sampler import Sampler

    with Sampler(model, n_ctx=max(4096, n_parallel * (max_tokens + 128)), n_parallel=n_parallel,
                 n_threads=n_threads) as sampler:
        return _timed_generate(sampler, texts, n, max_tokens, seed, desc)


def _timed_generate(sampler, texts: list[str], n: int, max_tokens: int, seed: int, desc: str) -> tuple[list, float]:
    """One generate call over all prompts, with a token progress bar; (completions, seconds)."""
    sampler.generate(texts[:1], n=1, max_tokens=4, seed=seed)  # warm-up
    t0 = time.perf_counter()
    with tqdm(total=len(texts) * n * max_tokens, desc=desc, unit="tok", leave=False) as bar:
        out = sampler.generate(texts, n=n, max_tokens=max_tokens, temperature=1.0, seed=seed,
                               progress=bar.update)
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
    from .server_sampler import ServerSampler

    texts = _bench_texts(prompts)
    with ServerSampler(url, model, served_model=served_model, max_concurrency=max_concurrency) as remote:
        served = remote.served_model
        server_out, server_s = _timed_generate(remote, texts, n, max_tokens, seed, "server")
    local_out, local_s = _in_process(model, texts, n, max_tokens, n_parallel, n_threads, seed, "in-process")

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


# =========================================================================== shared helpers
def _status_mb(field: str) -> float | None:
    """A VmXXX line of /proc/self/status in MiB (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident memory of this process, in MiB."""
    now = _status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def high_water_mb() -> float:
    """Peak resident memory of this process (VmHWM, else ru_maxrss), in MiB."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else peak_rss_mb()


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def gpu_peak_mb() -> float | None:
    """torch's CUDA peak allocation since the last reset, in MiB; None without a GPU."""
    if not _cuda():
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _reset_gpu_peak() -> None:
    if _cuda():
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _sync() -> None:
    if _cuda():
        import torch

        torch.cuda.synchronize()


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    """a / b rounded, None when either side is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def _isolated(fn: Callable[..., dict], **kwargs) -> dict:
    """Run fn(**kwargs) in a fresh 'spawn' process: its RSS high-water mark is its own.

    ru_maxrss/VmHWM never go down inside one process, so two paths measured in the same
    process would share one peak. A spawned child starts clean (only the interpreter).
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, **kwargs).result()


def _touch(model) -> None:
    """Read every weight once: safetensors loads lazily (mmap), and pages faulted in during
    the first step would otherwise count as that step's memory."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


# =========================================================================== sampler roofline
def weight_bytes(model: Path) -> int:
    """Bytes of all tensors in a GGUF: what a batch-1 decode step reads from memory."""
    import gguf

    reader = gguf.GGUFReader(str(model))
    return int(sum(int(t.n_bytes) for t in reader.tensors))


def memory_bandwidth_gbs(mib: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth of this machine (numpy, one thread), GB/s counting read + write.

    Best of `repeats`: on a shared machine the fastest run is the least disturbed one.
    """
    src = np.ones(mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def _sig(x: float, digits: int = 4) -> float:
    """Round to significant digits: a fraction of a fast machine's roofline can be 0.0004."""
    return float(f"{x:.{digits}g}")


def roofline(model: Path, batched_tps: float, sequential_tps: float, parallel: int) -> dict:
    """Memory-bound decode ceiling at batch 1 and the fraction of it each figure reaches.

    One decode step reads every weight once (KV-cache reads are ignored: tiny at these
    lengths), so batch 1 cannot beat bandwidth / weight_bytes tokens/s. A batched step
    reads the weights once for `parallel` sequences, so the batched figure is compared
    per weight pass (tokens/s / parallel) as well as per token.
    """
    wbytes = weight_bytes(model)
    bw = memory_bandwidth_gbs()
    ceiling = bw * 1e9 / wbytes
    return {
        "weight_bytes": wbytes,
        "memory_bandwidth_gbs": round(bw, 2),
        "roofline_batch1_tokens_per_s": round(ceiling, 1),
        "sequential_fraction_of_roofline": _sig(sequential_tps / ceiling),
        "batched_fraction_of_batch1_roofline": _sig(batched_tps / ceiling),
        "batched_weight_pass_fraction": _sig(batched_tps / max(parallel, 1) / ceiling),
    }


# =========================================================================== train
def synthetic_samples(vocab: int, n: int, prompt_tokens: int, completion_tokens: int, seed: int = 0,
                      group_size: int = 4, shared_prompt: bool = True) -> list:
    """Random-token GRPO samples: groups of `group_size` with mixed rewards, so none is skipped.

    shared_prompt: a group's samples share their prompt, as a GRPO group's do; False gives
    every sample its own prompt.
    """
    from .trainer import Sample

    rng = np.random.default_rng(seed)
    out = []
    prompt: list[int] = []
    for i in range(n):
        group, j = divmod(i, group_size)
        if j == 0 or not shared_prompt:
            prompt = [2] + rng.integers(3, vocab, prompt_tokens - 1).tolist()
        comp = rng.integers(3, vocab, completion_tokens).tolist()
        lps = (-rng.uniform(0.5, 4.0, completion_tokens)).tolist()
        out.append(Sample(prompt, comp, lps, reward=float(j % 2) + 0.1 * j, group=f"g{group}"))
    return out


def full_logits_grpo_step(model, optimizer, params, samples: list, cfg, pad_id: int = 0) -> dict[str, float]:
    """The GRPO step a user would write without minisir: full (B, T, vocab) logits.

    Same loss as minisir.trainer with its defaults (token-level DAPO, asymmetric clip,
    truncated importance weight vs the sampler, no KL): pad the batch, run the model,
    log_softmax over the whole vocabulary at every position, gather the chosen tokens.
    """
    import torch

    from .trainer import group_advantages

    adv, _, _ = group_advantages(samples, cfg.scale_std)
    rows = [(s, a) for s, a in zip(samples, adv)
            if a is not None and not (s.truncated and cfg.mask_truncated)]
    if not rows:
        return {"loss": 0.0, "tokens": 0.0}
    device = next(model.parameters()).device
    width = max(len(s.prompt_ids) + len(s.completion_ids) for s, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    mask = torch.zeros((len(rows), width - 1))
    slp = torch.zeros((len(rows), width - 1))
    known = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for b, (s, _) in enumerate(rows):
        seq = list(s.prompt_ids) + list(s.completion_ids)
        ids[b, : len(seq)] = torch.tensor(seq)
        att[b, : len(seq)] = 1
        p, m = len(s.prompt_ids), len(s.completion_ids)
        keep = torch.tensor(s.loss_mask if s.loss_mask is not None else [1] * m, dtype=torch.float32)
        mask[b, p - 1 : p - 1 + m] = keep
        if s.sampler_logprobs:
            slp[b, p - 1 : p - 1 + m] = torch.tensor(s.sampler_logprobs)
            known[b, p - 1 : p - 1 + m] = True
    ids, att, mask, slp, known = (t.to(device) for t in (ids, att, mask, slp, known))
    a = torch.tensor([a for _, a in rows], dtype=torch.float32, device=device)[:, None]

    optimizer.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, attention_mask=att).logits  # (B, T, vocab)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    old = lp.detach()
    ratio = torch.exp(lp - old)
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - cfg.eps_low, 1 + cfg.eps_high) * a)
    if cfg.is_cap is not None:
        w = torch.where(known, torch.clamp(torch.exp(old - slp), max=cfg.is_cap), torch.ones_like(old))
    else:
        w = torch.ones_like(old)
    n_tokens = mask.sum()
    loss = (-w * surrogate * mask).sum() / n_tokens
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "tokens": float(n_tokens)}


def _train_worker(path: str, gguf: str | None, hf_dir: str | None, cfg: dict, samples: int, prompt_tokens: int,
                  completion_tokens: int, repeats: int, seed: int, threads: int | None) -> dict:
    """One path of `bench train` (in its own process): load, warm up, time `repeats` steps."""
    import torch

    from .trainer import GRPOTrainer, TrainerConfig

    _set_threads(threads)
    tcfg = TrainerConfig(**cfg)
    trainer = GRPOTrainer(tcfg, Path(gguf) if gguf else None, Path(hf_dir) if hf_dir else None, seed=seed)
    batch = synthetic_samples(trainer.vocab_size, samples, prompt_tokens, completion_tokens, seed)
    _touch(trainer.model)
    rss_loaded = rss_mb()
    _reset_gpu_peak()

    if path == "chunked_no_share":
        trainer.cfg = trainer.cfg.model_copy(update={"share_prompt": False})

    def one() -> dict[str, float]:
        if path in ("chunked", "chunked_no_share"):
            return trainer.step(batch)
        return full_logits_grpo_step(trainer.model, trainer.optimizer, trainer.params, batch, tcfg, trainer._pad_id)

    first = one()  # warm-up; from the same LoRA init in both paths, so its loss must agree
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        one()
        _sync()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    peak = high_water_mb()
    del trainer
    torch.cuda.empty_cache() if _cuda() else None
    return {
        "seconds_per_step": round(sec, 3),
        "tokens": int(first["tokens"]),
        "tokens_per_s": round(first["tokens"] / sec, 2),
        "first_loss": first["loss"],
        "rss_after_load_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_delta_mb": round(peak - rss_loaded, 1),
        "gpu_peak_mb": gpu_peak_mb(),
    }


def bench_train(
    model: Path | None = None,
    hf_dir: Path | None = None,
    samples: int = 8,
    prompt_tokens: int = 32,
    completion_tokens: int = 128,
    repeats: int = 2,
    lora_rank: int = 16,
    seed: int = 0,
    threads: int | None = None,
    isolate: bool = True,
) -> dict:
    """One GRPO step: minisir's chunked log-prob trainer vs full (B, T, vocab) logits.

    Both paths train the same LoRA (same seed, same init) on the same synthetic samples;
    each runs in its own spawned process (isolate=True) so each peak RSS is its own.
    """
    from .assets import bundled_model_path

    if model is None and hf_dir is None:
        model = bundled_model_path()
    cfg = {"lora_rank": lora_rank, "lora_alpha": 2.0 * lora_rank, "seed": seed,
           "micro_batch_tokens": max(4096, samples * (prompt_tokens + completion_tokens))}
    kwargs = dict(gguf=str(model) if model else None, hf_dir=str(hf_dir) if hf_dir else None, cfg=cfg,
                  samples=samples, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  repeats=repeats, seed=seed, threads=threads)
    run = (lambda **kw: _isolated(_train_worker, **kw)) if isolate else _train_worker
    results = {}
    for path in ("chunked", "chunked_no_share", "full_logits"):
        log.info("bench train: %s path", path)
        results[path] = run(path=path, **kwargs)
    c, f, ns = results["chunked"], results["full_logits"], results["chunked_no_share"]
    return {
        "benchmark": "train",
        "model": (model.name if model else str(hf_dir)),
        "device": "GPU" if _cuda() else f"CPU x{os.cpu_count()}",
        "samples": samples,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "trained_tokens": c["tokens"],
        "lora_rank": lora_rank,
        "repeats": repeats,
        "isolated_processes": isolate,
        "chunked": c,
        "full_logits": f,
        "chunked_no_share": ns,
        "speedup": _ratio(c["tokens_per_s"], f["tokens_per_s"]),
        "share_prompt_speedup": _ratio(c["tokens_per_s"], ns["tokens_per_s"]),
        "memory_ratio": _ratio(f["peak_rss_delta_mb"], c["peak_rss_delta_mb"]),
        "gpu_memory_ratio": _ratio(f["gpu_peak_mb"], c["gpu_peak_mb"]),
        "first_loss_abs_diff": abs(c["first_loss"] - f["first_loss"]),
        "peak_rss_mb": round(max(c["peak_rss_mb"], f["peak_rss_mb"], high_water_mb()), 1),
        "gpu_peak_mb": max((x for x in (c["gpu_peak_mb"], f["gpu_peak_mb"]) if x is not None), default=None),
        "notes": "memory_ratio = full-logits peak RSS growth over chunked peak RSS growth, each measured "
                 "from after model load in its own process; speedup = chunked tokens/s over full-logits tokens/s; "
                 "share_prompt_speedup = chunked (a group's prompt forwarded once) over chunked with one forward "
                 "per completion",
    }


# =========================================================================== step
def hf_tokenizer(gguf_path: Path, hf_dir: Path | None = None):
    """An HF tokenizer for the model, as a transformers user has one.

    Rebuilding Gemma's 262k tokenizer from a GGUF takes ~90 s, so the result is saved
    next to the converted checkpoint cache and reused.
    """
    from transformers import AutoTokenizer

    if hf_dir is not None:
        return AutoTokenizer.from_pretrained(str(hf_dir))
    from .hf_model import cache_key
    from .assets import cache_dir

    target = cache_dir() / "hf-tokenizer" / cache_key(Path(gguf_path))
    if (target / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))
    log.info("building the HF tokenizer from %s once (about 90 s)", gguf_path)
    tok = AutoTokenizer.from_pretrained(str(Path(gguf_path).parent), gguf_file=Path(gguf_path).name)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tok.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return tok


def hf_generate(model, tokenizer, prompt_ids: list[list[int]], n: int, max_tokens: int, temperature: float,
                top_p: float, stop: list[str], seed: int = 0) -> dict:
    """transformers `generate` for n samples of each prompt in one left-padded batch (the usual way)."""
    import torch

    device = next(model.parameters()).device
    rows = [ids for ids in prompt_ids for _ in range(n)]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(r)
        att[b, width - len(r):] = 1
    torch.manual_seed(seed)
    kwargs = {"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}
    _sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                             temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_tokens,
                             pad_token_id=pad, **kwargs)
    _sync()
    seconds = time.perf_counter() - t0
    gen = out[:, width:].cpu()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    completions = []
    for row in gen.tolist():  # finished rows are padded with `pad` to the longest row
        keep = []
        for t in row:
            if t == pad:
                break
            keep.append(t)
            if t in eos:
                break
        completions.append(keep)
    tokens = sum(len(c) for c in completions)
    return {"seconds": seconds, "tokens": tokens, "sequences": len(rows), "completions": completions}


def trl_update(model, tokenizer, samples: list, cfg, temperature: float, seed: int, workdir: Path) -> dict:
    """TRL GRPOTrainer (LoRA) for one optimizer step on the given samples.

    The samples come in through TRL's `rollout_func`, so TRL's own code does everything
    after generation: rewards -> group advantages -> log-probs -> loss -> AdamW step.
    minisir's masks (truncated completions, masked tokens) go in as TRL's `env_mask`.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig
    from trl import GRPOTrainer as TRLGRPOTrainer

    from .errors import MinisirError

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    sizes = {len(v) for v in groups.values()}
    if len(sizes) != 1:
        raise MinisirError(f"bench step: TRL needs equal group sizes, got {sorted(sizes)}; "
                           "set method.teacher_samples equal to method.student_samples")
    group_size = sizes.pop()
    queues = {g: list(v) for g, v in groups.items()}

    def rollout(prompts: list, trainer) -> dict:
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [],
                                "bench_reward": []}
        for p in prompts:
            s = queues[p].pop(0)
            mask = list(s.loss_mask) if s.loss_mask is not None else [1] * len(s.completion_ids)
            if s.truncated and cfg.mask_truncated:
                mask = [0] * len(mask)
            out["prompt_ids"].append(list(s.prompt_ids))
            out["completion_ids"].append(list(s.completion_ids))
            out["logprobs"].append(list(s.sampler_logprobs) or [0.0] * len(s.completion_ids))
            out["env_mask"].append(mask)
            out["bench_reward"].append(float(s.reward))
        return out

    def reward(prompts, completions, bench_reward, **_):
        return list(bench_reward)

    args = GRPOConfig(
        output_dir=str(workdir), max_steps=1, per_device_train_batch_size=len(samples),
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=group_size,
        num_iterations=cfg.updates_per_step, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
        beta=cfg.kl_coef, epsilon=cfg.eps_low, epsilon_high=cfg.eps_high,
        loss_type="dapo" if cfg.loss_agg == "token" else "dr_grpo",
        scale_rewards="group" if cfg.scale_std else "none", mask_truncated_completions=False,
        max_completion_length=max(len(s.completion_ids) for s in samples), temperature=temperature,
        gradient_checkpointing=cfg.gradient_checkpointing, use_cpu=not _cuda(), bf16=_cuda(),
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=seed,
        dataloader_num_workers=0, shuffle_dataset=False,
    )
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    trainer = TRLGRPOTrainer(model=model, reward_funcs=reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": list(groups)}), processing_class=tokenizer,
                             peft_config=lora, rollout_func=rollout)
    _sync()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs; stdout carries only our JSON
        trainer.train()
    _sync()
    seconds = time.perf_counter() - t0
    if any(queues.values()):
        raise RuntimeError("bench step: TRL did not consume every sample")
    del trainer
    torch.cuda.empty_cache() if _cuda() else None
    return {"seconds": seconds}


def peft_update(model, samples: list, cfg, seed: int) -> dict:
    """The no-TRL baseline: a PEFT LoRA on the model and one full-logits GRPO step."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    _sync()
    t0 = time.perf_counter()
    full_logits_grpo_step(peft_model, opt, params, samples, cfg)
    _sync()
    return {"seconds": time.perf_counter() - t0}


def _baseline_step_worker(gguf: str, hf_dir: str | None, calls: list[dict], samples: list[dict], trainer_cfg: dict,
                          temperature: float, seed: int, baseline: str, threads: int | None) -> dict:
    """The popular stack's version of one step, in its own process: HF generate + TRL (or PEFT) update."""
    import torch

    from .hf_model import load_hf_model
    from .trainer import Sample, TrainerConfig

    _set_threads(threads)
    cfg = TrainerConfig(**trainer_cfg)
    t0 = time.perf_counter()
    model = load_hf_model(Path(gguf), hf_dir=Path(hf_dir) if hf_dir else None, dtype=cfg.dtype, device=cfg.device)
    tokenizer = hf_tokenizer(Path(gguf), Path(hf_dir) if hf_dir else None)
    load_s = time.perf_counter() - t0
    _touch(model)
    rss_loaded = rss_mb()
    _reset_gpu_peak()
    model.eval()
    gens = []
    for i, call in enumerate(calls):
        res = hf_generate(model, tokenizer, call["prompt_ids"], call["n"], call["max_tokens"], call["temperature"],
                          call["top_p"], call["stop"], seed=seed + i)
        gens.append({"role": call["role"], "seconds": round(res["seconds"], 3), "tokens": res["tokens"],
                     "sequences": res["sequences"]})
    model.train()
    model.config.use_cache = False
    batch = [Sample(**s) for s in samples]
    update: dict[str, Any] = {"seconds": 0.0}
    if batch:
        if baseline == "trl":
            with tempfile.TemporaryDirectory(prefix="minisir-bench-trl-") as work:
                update = trl_update(model, tokenizer, batch, cfg, temperature, seed, Path(work))
        else:
            update = peft_update(model, batch, cfg, seed)
    peak = high_water_mb()
    del model
    torch.cuda.empty_cache() if _cuda() else None
    return {"load_seconds": round(load_s, 3), "generate": gens, "update_seconds": round(update["seconds"], 3),
            "rss_after_load_mb": round(rss_loaded, 1), "peak_rss_mb": round(peak, 1),
            "peak_rss_delta_mb": round(peak - rss_loaded, 1), "gpu_peak_mb": gpu_peak_mb()}


def _trl_available() -> bool:
    try:
        import trl  # noqa: F401
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def _sample_dict(s) -> dict:
    return {"prompt_ids": list(s.prompt_ids), "completion_ids": list(s.completion_ids),
            "sampler_logprobs": list(s.sampler_logprobs), "reward": float(s.reward), "group": s.group,
            "loss_mask": None if s.loss_mask is None else list(s.loss_mask), "truncated": bool(s.truncated)}


def bench_step(
    recipe: Path,
    overrides: dict[str, Any] | None = None,
    baseline: str = "auto",
    threads: int | None = None,
    keep_dir: Path | None = None,
) -> dict:
    """One full OpenSIR step (loop.Runner) by phase, and the same work on the popular stack.

    The baseline replays the step's exact sampling calls (same prompt ids, number of
    samples, token limits, temperature, top_p, stop strings) with transformers `generate`
    and trains on the step's exact samples with TRL's GRPOTrainer (or, without TRL, a
    plain PEFT full-logits step), in a spawned process so its memory is its own.
    """
    from .errors import MinisirError
    from .loop import Runner
    from .recipe import load_recipe

    if baseline == "auto":
        baseline = "trl" if _trl_available() else "peft"
    if baseline == "trl" and not _trl_available():
        raise MinisirError("bench step --baseline trl: TRL is not installed; pip install 'minisir[bench]'")
    run_dir = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="minisir-bench-step-"))
    sets = {"run.steps": 1, **(overrides or {}), "run.dir": str(run_dir)}
    if threads and "sampler.n_threads" not in sets:  # one thread budget for every engine in the comparison
        sets["sampler.n_threads"] = int(threads)
    cfg = load_recipe(recipe, sets)
    if cfg.method.name != "opensir":
        raise MinisirError(f"bench step: method.name is {cfg.method.name!r}; this benchmark times an OpenSIR step")
    if (run_dir / "archive.sqlite").exists():
        raise MinisirError(f"bench step: {run_dir} already holds a run; pass an empty --keep-dir")
    _set_threads(threads)
    calls: list[dict] = []
    trained: list = []
    runner = Runner(cfg, progress=False)
    try:
        # Load everything first: the timed step must not include one-off model loading.
        runner.trainer, runner.embedder  # noqa: B018
        runner.sampler.generate(["Warm up"], n=1, max_tokens=2)
        sample_fn, train_fn = runner.sampler.generate, runner.trainer.step

        def recording_generate(prompts, n=1, max_tokens=256, temperature=1.0, top_p=1.0, seed=0, stop=(), **kw):
            out = sample_fn(prompts, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=stop, **kw)
            calls.append({"role": "teacher" if not calls else "student",
                          "prompt_ids": [list(g[0].prompt_ids) for g in out], "n": n, "max_tokens": max_tokens,
                          "temperature": temperature, "top_p": top_p, "stop": list(stop),
                          "tokens": sum(len(c.token_ids) for g in out for c in g)})
            return out

        def recording_step(samples):
            trained.extend(samples)
            return train_fn(samples)

        runner.sampler.generate = recording_generate
        runner.trainer.step = recording_step
        summary, _ = runner.step(0)
        metrics = runner.archive.steps()[0]["metrics"]
        gguf, hf_dir = runner.gguf, runner.hf_dir
    finally:
        runner.close()
    minisir_peak = high_water_mb()
    minisir_gpu = gpu_peak_mb()
    del runner
    gc.collect()

    tcfg = cfg.trainer.model_copy(update={"seed": cfg.run.seed})
    base = _isolated(_baseline_step_worker, gguf=str(gguf), hf_dir=str(hf_dir) if hf_dir else None, calls=calls, samples=[_sample_dict(s) for s in trained],
                     trainer_cfg=tcfg.model_dump(), temperature=cfg.method.temperature, seed=cfg.run.seed,
                     baseline=baseline, threads=threads)
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)

    phases = {k[len("seconds_"):]: v for k, v in metrics.items() if k.startswith("seconds_")}
    m_sample_tokens = sum(c["tokens"] for c in calls)
    m_sample_s = phases.get("teacher", 0.0) + phases.get("student", 0.0)
    b_sample_tokens = sum(g["tokens"] for g in base["generate"])
    b_sample_s = sum(g["seconds"] for g in base["generate"])
    m_tps = m_sample_tokens / m_sample_s if m_sample_s else None
    b_tps = b_sample_tokens / b_sample_s if b_sample_s else None
    # Sampling draws differ between engines; scale the baseline to minisir's token count.
    b_sample_norm = m_sample_tokens / b_tps if b_tps else b_sample_s
    b_step = b_sample_norm + base["update_seconds"]
    m_comparable = m_sample_s + phases.get("train", 0.0)
    label = ("transformers-generate + trl GRPOTrainer (LoRA)" if baseline == "trl"
             else "transformers-generate + peft full-logits GRPO")
    by_role = {}
    for call, gen in zip(calls, base["generate"]):
        role = call["role"]
        by_role[role] = {
            "prompts": len(call["prompt_ids"]), "n": call["n"], "max_tokens": call["max_tokens"],
            "minisir_tokens": call["tokens"], "minisir_seconds": phases.get(role),
            "minisir_tokens_per_s": metrics.get(f"{role}_tokens_per_s"),
            "baseline_tokens": gen["tokens"], "baseline_seconds": gen["seconds"],
            "baseline_tokens_per_s": round(gen["tokens"] / gen["seconds"], 2) if gen["seconds"] else None,
        }
        by_role[role]["speedup"] = _ratio(by_role[role]["minisir_tokens_per_s"], by_role[role]["baseline_tokens_per_s"])
    return {
        "benchmark": "step",
        "recipe": str(recipe),
        "overrides": overrides or {},
        "device": "GPU" if _cuda() else f"CPU x{os.cpu_count()}",
        "baseline": label,
        "summary": summary,
        "minisir": {
            "seconds_step": metrics.get("seconds_step"),
            "phases_seconds": phases,
            "teacher_tokens_per_s": metrics.get("teacher_tokens_per_s"),
            "student_tokens_per_s": metrics.get("student_tokens_per_s"),
            "sample_tokens": m_sample_tokens,
            "train_tokens": metrics.get("train_tokens"),
            "train_samples": len(trained),
            "peak_rss_mb": round(minisir_peak, 1),
            "gpu_peak_mb": minisir_gpu,
        },
        "baseline_run": {
            "sample_seconds": round(b_sample_s, 3),
            "sample_seconds_at_minisir_tokens": round(b_sample_norm, 3),
            "sample_tokens": b_sample_tokens,
            "update_seconds": base["update_seconds"],
            "step_seconds": round(b_step, 3),
            "load_seconds": base["load_seconds"],
            "peak_rss_mb": base["peak_rss_mb"],
            "peak_rss_delta_mb": base["peak_rss_delta_mb"],
            "gpu_peak_mb": base["gpu_peak_mb"],
        },
        "sampling_by_role": by_role,
        "speedup_vs_trl" if baseline == "trl" else "speedup_vs_baseline": {
            "sampling": _ratio(m_tps, b_tps),
            "update": _ratio(base["update_seconds"], phases.get("train")),
            "sampling_plus_update": _ratio(b_step, m_comparable),
            "step": _ratio(b_step, metrics.get("seconds_step")),
        },
        "notes": "sampling = tokens/s ratio; update = baseline update seconds / minisir train-phase seconds on the "
                 "same samples; sampling_plus_update compares like with like; step divides by minisir's whole step, "
                 "which also embeds, scores, exports the GGUF adapter, saves state and commits (the baseline does "
                 "none of that). Baseline sampling time is scaled to minisir's number of sampled tokens.",
    }



# =========================================================================== archive
def _populate(path: Path, n: int, dim: int, solutions_per_problem: int, seed: int, per_step: int = 16) -> float:
    """Bulk-fill a fresh archive with n synthetic problems (+ embeddings, solutions); returns seconds.

    Rows go in through executemany in one transaction: building 100k problems through
    commit_step one step at a time would take far longer than the thing being measured.
    """
    from .archive import Archive

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
    from .archive import Archive
    from .embed import diversity_scores

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
