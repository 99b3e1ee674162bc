"""System facts and shared measurement helpers: memory, the device, threads, the roofline.

Every benchmark reports memory with these (peak RSS from /proc, torch's CUDA peak) and
runs each compared path in its own spawned process (_isolated) so each peak is its own.
The roofline is the memory-bound ceiling of batch-1 decoding on this machine; the compute
roofline is llama.cpp's own throughput on a batch that needs every token's logits, which is what a
batched decode step costs once it is compute-bound.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name() -> str:
    """The hardware the sampler ran on, in words."""
    from ..llama_runtime import _llama

    if _llama().llama_supports_gpu_offload():
        try:
            import torch

            if torch.cuda.is_available():
                return f"GPU {torch.cuda.get_device_name(0)}"
        except ImportError:
            pass
        return "GPU (llama.cpp offload)"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


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


def matmul_flops_per_token(model: Path) -> tuple[float, float]:
    """(FLOPs of one token's forward matmuls, the output layer's share of them), from a GGUF's shapes.

    Every 2-D weight is one matmul of 2 * rows * cols FLOPs per token, except the token embedding,
    which is a lookup; a model with tied embeddings (no output.weight) multiplies by it once more as
    its output layer. Attention over the KV cache is left out: small at these lengths.
    """
    import gguf

    reader = gguf.GGUFReader(str(model))
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    matmul = sum(math.prod(dims) for name, dims in shapes.items()
                 if len(dims) == 2 and name != "token_embd.weight")
    output = math.prod(shapes["output.weight"]) if "output.weight" in shapes else math.prod(
        shapes.get("token_embd.weight", [0]))
    if "output.weight" not in shapes:
        matmul += output
    return 2.0 * matmul, output / matmul if matmul else 0.0


def logits_throughput(model: Path, batch: int, n_threads: int | None = None, repeats: int = 3) -> float:
    """Tokens/s of one llama_decode over `batch` tokens that all need logits (best of `repeats`).

    A batched decode step of B sequences runs the same kernels over B tokens, each with its logits,
    so at batch = B this is that step's ceiling without sampling or Python; at a large batch it is
    the machine's compute ceiling for this model.
    """
    from llama_cpp import Llama

    from ..llama_runtime import amx_safe_defaults

    with amx_safe_defaults():
        llm = Llama(str(model), n_ctx=batch + 16, n_batch=batch, n_ubatch=batch, logits_all=True,
                    n_threads=n_threads or os.cpu_count(), verbose=False)
    try:
        ids = llm.tokenize(("The sum of 12 and 30 is 42. " * batch).encode())[:batch]
        llm.eval(ids)  # warm-up
        best = math.inf
        for _ in range(repeats):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            best = min(best, time.perf_counter() - t0)
    finally:
        llm.close()
    return len(ids) / best


def compute_roofline(model: Path, batched_tps: float, sequential_tps: float, parallel: int,
                     n_threads: int | None = None, large_batch: int = 256) -> dict:
    """The compute ceiling of batched decoding, measured in this run, and how close the sampler gets.

    Reported at the sampler's own batch (`parallel` tokens a step) and at `large_batch`; the
    speedup over sequential that the compute ceiling allows is large-batch / sequential.
    """
    flops, output_share = matmul_flops_per_token(model)
    same = logits_throughput(model, parallel, n_threads)
    large = logits_throughput(model, large_batch, n_threads)
    return {
        "flops_per_token": round(flops),
        "output_layer_flops_share": round(output_share, 3),
        "logits_tokens_per_s_at_parallel": round(same, 1),
        "compute_roofline_batch": large_batch,
        "compute_roofline_tokens_per_s": round(large, 1),
        "compute_roofline_gflops": round(large * flops / 1e9, 2),
        "batched_fraction_of_compute_roofline": _sig(batched_tps / large),
        "batched_fraction_of_same_batch_ceiling": _sig(batched_tps / same),
        "compute_roofline_speedup_over_sequential": round(large / sequential_tps, 2),
    }
