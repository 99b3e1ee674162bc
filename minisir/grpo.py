"""What a GRPO update is given, and which groups carry signal: torch-free.

Recipes and methods import these (validating a recipe must not load torch); the trainer
(trainer.py) consumes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Reward spreads below this are float noise whatever the floor says.
_FLOAT_NOISE = 1e-6


class TrainerConfig(BaseModel):
    """LoRA + GRPO settings (the recipe's `trainer:` section)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """A recipe written for the first sync guard gets told what replaced its knob."""
        if isinstance(data, dict) and "max_logprob_gap" in data:
            raise ValueError("max_logprob_gap was replaced by sync_confidence (how clearly llama.cpp must match "
                             "another adapter scale before the run stops, e.g. 3; null = no guard): rename the key")
        return data

    lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank r")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA alpha; scale = alpha / r")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA path while training")
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), min_length=1,
                                      description="layers that get a LoRA (default: every attention and MLP projection)")
    learning_rate: float = Field(5e-5, gt=0, le=1.0, description="AdamW learning rate (a LoRA wants 10-100x a full fine-tune's)")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient norm clip")
    loss_agg: Literal["token", "drgrpo"] = Field(
        "token", description="token: sum / trained tokens (DAPO); drgrpo: sum / (sequences * max_completion_tokens)"
    )
    max_completion_tokens: int = Field(512, ge=1, description="drgrpo's constant normaliser (the sampler's max_tokens)")
    scale_std: bool = Field(True, description="divide group advantages by the group's reward std")
    min_reward_std: float = Field(0.02, ge=0.0, le=1.0, description=(
        "a group trains only when its reward std is at least this fraction of the reward's scale (the "
        "method's largest reward): smaller spreads, such as a continuous diversity term's wobble, are noise "
        "that std scaling would blow up into +-1 advantages"))
    eps_low: float = Field(0.2, ge=0.0, lt=1.0, description="PPO clip below: ratio >= 1 - eps_low")
    eps_high: float = Field(0.28, ge=0.0, description="PPO clip above: ratio <= 1 + eps_high (DAPO's clip-higher)")
    kl_coef: float = Field(0.0, ge=0.0, description="k3 KL to the base model (LoRA disabled); 0 = off")
    is_cap: float | None = Field(
        2.0, ge=1.0, description="cap of the truncated importance weight trainer/sampler; null = no correction"
    )
    mask_truncated: bool = Field(
        True, description="no loss on completions that never finished: hit max_tokens or looped")
    micro_batch_tokens: int = Field(4096, ge=16, description="padded tokens per micro-batch (gradient accumulation)")
    logprob_chunk: int = Field(256, ge=1, description="positions per lm_head/log_softmax chunk")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory, slower)")
    share_prompt: bool = Field(True, description=(
        "forward a group's shared prompt once per micro-batch instead of once per completion (few-shot prompts "
        "dominate the cost otherwise); off with gradient_checkpointing"))
    updates_per_step: int = Field(1, ge=1, le=64, description="optimizer updates over each step's samples")
    sync_tolerance: float = Field(0.2, gt=0, description=(
        "the sync guard's second test: the adapter scale llama.cpp shows (a least-squares slope on the "
        "trainer's adapter effect) may lie this far from 1 before it counts (README, 'Sync guard')"))
    sync_gap_ratio: float | None = Field(3.0, gt=1, description=(
        "the sync guard's third test: llama.cpp and the trainer may disagree on the run's own completions by "
        "at most this many times their no-adapter gap (and at least 0.1 nats/token) before it counts; it calls "
        "another run's trained adapter, which the other two tests miss (README, 'Sync guard'). null = off"))
    sync_confidence: float | None = Field(
        3.0, gt=0, description="before each step, stop when llama.cpp's log-probs on the probe texts match the "
        "trainer's adapter at another scale (none, half, double) better than at sampler.adapter_scale by this "
        "paired z, or show a scale outside sync_tolerance by this many standard errors, also after one reload "
        "of the adapter from the trainer's state (minisir/sync.py): a missing, half-loaded, mis-scaled or other "
        "run's adapter. Calibrated in README, 'Sync guard'. null = never")
    seed: int = Field(0, ge=0, description="LoRA init and dropout seed (a run sets it from run.seed)")
    device: str | None = Field(None, description="torch device; null = cuda if available else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto = bf16 on GPU, fp32 on CPU")


@dataclass
class Sample:
    """One completion to train on, with the ids/log-probs exactly as the sampler produced them."""

    prompt_ids: list[int]
    completion_ids: list[int]
    sampler_logprobs: list[float]  # one per completion token; [] = unknown (weight 1, not in logprob_gap)
    reward: float
    group: str  # rewards are compared inside a group (GRPO)
    loss_mask: list[int] | None = None  # per completion token, 1 = trained, 0 = masked
    truncated: bool = False  # never finished its answer: finish_reason "length" or "loop" (sampler.UNFINISHED)
    reward_scale: float = 1.0  # the largest reward this sample's role can earn (min_reward_std is relative to it)
    temperature: float = 1.0  # the sampling T: the trainer scores log softmax(logits / T), the policy that sampled


def has_signal(rewards: Sequence[float], floor: float = 0.0) -> bool:
    """Whether a group's rewards spread enough to train on: std >= max(floor, float noise).

    One rule for every place that decides what trains (the trainer, OpenSIR's and SQLM's
    group choice), so counts of trained groups mean the same thing everywhere.
    """
    if len(rewards) < 2:
        return False
    return float(np.std(np.asarray(rewards, dtype=np.float64))) >= max(floor, _FLOAT_NOISE)


def group_advantages(samples: list[Sample], scale_std: bool,
                     min_reward_std: float = 0.0) -> tuple[list[float | None], int, int]:
    """Per-sample advantage (None = group skipped), groups used, groups skipped.

    A group trains when has_signal(its rewards, min_reward_std * its reward_scale).
    """
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_group[s.group].append(i)
    adv: list[float | None] = [None] * len(samples)
    used = skipped = 0
    for idx in by_group.values():
        r = np.array([float(samples[i].reward) for i in idx], dtype=np.float64)
        scale = max(float(samples[i].reward_scale) for i in idx)
        if not has_signal(r, min_reward_std * scale):
            skipped += 1
            continue
        used += 1
        a = r - r.mean()
        if scale_std:
            a = a / r.std()
        for i, v in zip(idx, a.tolist()):
            adv[i] = float(v)
    return adv, used, skipped
