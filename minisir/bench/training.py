"""`minisir bench train`: one GRPO step of minisir's trainer vs the full-logits reference.

Both paths train the same LoRA from the same init on the same synthetic samples
(synthetic_samples), each in its own spawned process so each peak RSS is its own.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np

from .reference import full_logits_grpo_step
from .system import (_cuda, _isolated, _ratio, _reset_gpu_peak, _set_threads, _sync, _touch, gpu_peak_mb,
                     high_water_mb, rss_mb)

log = logging.getLogger(__name__)


def synthetic_samples(vocab: int, n: int, prompt_tokens: int, completion_tokens: int, seed: int = 0,
                      group_size: int = 4, shared_prompt: bool = True) -> list:
    """Random-token GRPO samples: groups of `group_size` with mixed rewards, so none is skipped.

    shared_prompt: a group's samples share their prompt, as a GRPO group's do; False gives
    every sample its own prompt.
    """
    from ..trainer import Sample

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


def _train_worker(path: str, gguf: str | None, hf_dir: str | None, cfg: dict, samples: int, prompt_tokens: int,
                  completion_tokens: int, repeats: int, seed: int, threads: int | None) -> dict:
    """One path of `bench train` (in its own process): load, warm up, time `repeats` steps."""
    import torch

    from ..trainer import GRPOTrainer, TrainerConfig

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
    from ..assets import bundled_model_path

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
