"""The GPU path: llama.cpp built with CUDA offloads the model, and the trainer steps in bf16 on CUDA.

Marked `cuda`: skipped where torch sees no GPU (conftest.py); scripts/gpu-check.sh runs them on a
CUDA machine with `pytest -m cuda`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minisir.assets import bundled_model_path
from minisir.trainer import GRPOTrainer, TrainerConfig
from test_trainer import _batch, _lora
from tiny_models import tiny_hf_dir

pytestmark = pytest.mark.cuda

PROBE = "Problem: What is 12 + 30?\nSolution: 12 + 30 = 42. The answer is \\boxed{42}.\n\nProblem: What is 7 * 6?"


def test_llama_cpp_is_built_with_gpu_offload():
    import llama_cpp

    assert llama_cpp.llama_supports_gpu_offload(), "llama-cpp-python was built without CUDA (CMAKE_ARGS=-DGGML_CUDA=on)"


def test_sampler_offloads_to_the_gpu_and_scores_like_the_cpu():
    from minisir.sampler import Sampler

    path = bundled_model_path()
    free_before = torch.cuda.mem_get_info()[0]
    with Sampler(path, n_ctx=1024, n_parallel=1, n_gpu_layers=-1) as gpu:
        used = free_before - torch.cuda.mem_get_info()[0]
        ids = gpu.tokenize(PROBE)
        on_gpu = np.array(gpu.score(ids[:8], ids[8:], stepwise=False))
    assert used > 100 * 2**20, f"only {used / 2**20:.0f} MiB of GPU memory taken: the layers stayed on the CPU"
    with Sampler(path, n_ctx=1024, n_parallel=1, n_gpu_layers=0) as cpu:
        on_cpu = np.array(cpu.score(ids[:8], ids[8:], stepwise=False))
    gap = np.abs(on_gpu - on_cpu)
    assert gap.mean() < 0.05 and gap.max() < 0.5, (gap.mean(), gap.max())  # kernels differ, the model must not


def test_trainer_steps_in_bf16_on_the_gpu(tmp_path):
    trainer = GRPOTrainer(TrainerConfig(learning_rate=1e-2), None, hf_dir=tiny_hf_dir(tmp_path, init=0.1), seed=0)
    assert trainer.device.type == "cuda"  # the default device where torch sees a GPU
    assert next(trainer.model.get_base_model().parameters()).dtype == torch.bfloat16
    before = _lora(trainer)
    torch.cuda.reset_peak_memory_stats()
    metrics = trainer.step(_batch())
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    after = _lora(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no LoRA weight moved"
    assert torch.cuda.max_memory_allocated() > 0
