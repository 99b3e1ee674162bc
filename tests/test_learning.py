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


def test_sampler_and_trainer_score_the_sampled_tokens_at_the_sampling_temperature():
    """At T = 0.6 both sides take log softmax(logits / 0.6) of the same tokens and agree (up to the
    quantised vs dequantised numerics); scoring them at T = 1 instead, as before, is far off."""
    model = bundled_model_path()
    trainer = GRPOTrainer(TrainerConfig(lora_rank=4, lora_alpha=8, seed=0), model, seed=0)
    with Sampler(model, n_ctx=2048, n_parallel=8, n_threads=2) as sampler:
        groups = sampler.generate(PROMPTS, n=4, max_tokens=24, temperature=0.6, top_p=1.0, seed=3)
    comps = [c for g in groups for c in g]
    assert all(c.temperature == 0.6 for c in comps)
    at_t = trainer.logprobs([Sample(c.prompt_ids, c.token_ids, [], 0.0, "g", temperature=0.6) for c in comps])
    at_1 = trainer.logprobs([Sample(c.prompt_ids, c.token_ids, [], 0.0, "g") for c in comps])
    sampled = np.concatenate([c.logprobs for c in comps])
    gap_t = float(np.mean(np.abs(np.concatenate(at_t) - sampled)))
    gap_1 = float(np.mean(np.abs(np.concatenate(at_1) - sampled)))
    print(f"gap at T=0.6 {gap_t:.4f}, scored at T=1 {gap_1:.4f}")
    assert gap_t < 0.1
    assert gap_1 > 3 * gap_t
