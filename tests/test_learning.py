"""Learning signal with every real part in the loop: llama.cpp samples the bundled model,
the GRPO trainer updates the LoRA, the adapter is exported to GGUF and hot-swapped back."""

from __future__ import annotations

import numpy as np

from minisir.assets import bundled_model_path
from minisir.sampler import Sampler
from minisir.trainer import GRPOTrainer, Sample, TrainerConfig

PROMPTS = ["Q: Name a fruit.\nA:", "Q: What colour is the sky?\nA:"]
MAX_TOKENS = 16


def brevity(n_tokens: int, finished: bool) -> float:
    """Toy reward: short answers that end their line score high; rambling scores 0."""
    return 1.0 - n_tokens / MAX_TOKENS if finished else 0.0


def test_grpo_with_the_real_sampler_raises_the_reward(tmp_path):
    model = bundled_model_path()
    cfg = TrainerConfig(lora_rank=8, lora_alpha=16, learning_rate=5e-4, micro_batch_tokens=2048, seed=0)
    trainer = GRPOTrainer(cfg, model, seed=0)
    history = []
    with Sampler(model, n_ctx=2048, n_parallel=16, n_threads=2) as sampler:
        for step in range(20):
            groups = sampler.generate(PROMPTS, n=8, max_tokens=MAX_TOKENS, temperature=1.0, seed=step,
                                      stop=["\n"])
            samples = [
                Sample(c.prompt_ids, c.token_ids, c.logprobs,
                       brevity(len(c.token_ids), c.finish_reason == "stop"), group=str(i))
                for i, group in enumerate(groups) for c in group
            ]
            history.append(float(np.mean([s.reward for s in samples])))
            trainer.step(samples)
            sampler.set_adapter(trainer.export_adapter(tmp_path / f"step-{step}.gguf"))
    start, end = history[0], np.mean(history[-4:])  # history[0]: before any update
    print(f"mean reward {start:.3f} -> {end:.3f}: {np.round(history, 2).tolist()}")
    assert end > start + 0.3, history
