"""What a user would run instead of minisir: transformers `generate`, TRL's GRPOTrainer, PEFT.

`minisir bench step` replays minisir's step on this stack (_baseline_step_worker, in its
own process): hf_generate for sampling, then trl_update (TRL installed) or peft_update
(a PEFT LoRA and the reference full-logits step) for the update.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .reference import full_logits_grpo_step
from .system import _cuda, _reset_gpu_peak, _set_threads, _sync, _touch, gpu_peak_mb, high_water_mb, rss_mb

log = logging.getLogger(__name__)


def hf_tokenizer(gguf_path: Path, hf_dir: Path | None = None):
    """An HF tokenizer for the model, as a transformers user has one.

    Rebuilding Gemma's 262k tokenizer from a GGUF takes ~90 s, so the result is saved
    next to the converted checkpoint cache and reused.
    """
    from transformers import AutoTokenizer

    if hf_dir is not None:
        return AutoTokenizer.from_pretrained(str(hf_dir))
    from ..hf_model import cache_key
    from ..assets import cache_dir

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

    from ..errors import MinisirError

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

    from ..hf_model import load_hf_model
    from ..trainer import Sample, TrainerConfig

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
