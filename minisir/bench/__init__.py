"""Benchmarks that compare minisir against what a user would do instead, in one run.

Absolute times on shared machines mean little, so every figure comes with a baseline
measured in the same process on the same inputs, and the ratio is the headline.

One module per concern (`minisir bench SUBCOMMAND` in brackets; see BENCHMARKS.md):

    system.py     memory (RSS, CUDA peak), device name, spawned isolation, memory bandwidth, rooflines
    sampling.py   batched sampler vs a sequential loop [sampler]; server vs in-process [server]
    reference.py  full_logits_grpo_step: the plain full-logits GRPO step, the oracle the trainer is checked against
    training.py   synthetic GRPO samples; chunked trainer vs the reference step [train]
    baselines.py  transformers generate, TRL GRPOTrainer and PEFT: the popular stack's step
    step.py       one OpenSIR step by phase vs the baselines on the same work [step]
    archive.py    diversity scoring and step commits as the archive grows [archive]
    sync.py       the sync guard on a run's adapter, healthy and with each fault forced [sync]

Every name below stays importable from `minisir.bench` as it was before the split.
"""

from __future__ import annotations

# Re-exports (names the CLI and tests import from here).
from .archive import _growth, _populate, _step_rows, bench_archive
from .baselines import (_baseline_step_worker, _trl_available, hf_generate, hf_tokenizer, peft_update,
                        trl_update)
from .reference import full_logits_grpo_step
from .sampling import BENCH_PROMPTS, _bench_texts, _in_process, _timed_generate, bench_sampler, bench_server
from .step import _sample_dict, bench_step
from .system import (_cuda, _isolated, _ratio, _reset_gpu_peak, _set_threads, _sig, _status_mb, _sync, _touch,
                     compute_roofline, device_name, gpu_peak_mb, high_water_mb, logits_throughput,
                     matmul_flops_per_token, memory_bandwidth_gbs, peak_rss_mb, roofline, rss_mb, weight_bytes)
from .training import _train_worker, bench_train, synthetic_samples

__all__ = [
    "BENCH_PROMPTS", "bench_archive", "bench_sampler", "bench_server", "bench_step", "bench_train",
    "compute_roofline", "device_name", "logits_throughput", "matmul_flops_per_token",
    "full_logits_grpo_step", "gpu_peak_mb", "hf_generate", "hf_tokenizer", "high_water_mb", "memory_bandwidth_gbs",
    "peak_rss_mb", "peft_update", "roofline", "rss_mb", "synthetic_samples", "trl_update", "weight_bytes",
]
