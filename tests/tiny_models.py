"""Tiny random models for tests: a 262144-token vocabulary so the bundled tokenizer fits."""

from __future__ import annotations

import torch


def _scramble(model, seed: int) -> None:
    """Weights large enough that log-probs spread by several nats (a test that can fail)."""
    g = torch.Generator().manual_seed(seed)
    gemma = model.config.model_type.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (0.0 if gemma else 1.0))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def tiny_model(arch: str, seed: int = 0, vocab: int = 262144):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    if arch == "gemma3":
        cfg = Gemma3TextConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=4, max_position_embeddings=512,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            },
            final_logit_softcapping=30.0,
        )
        model = Gemma3ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            tie_word_embeddings=False, rms_norm_eps=1e-6,
        )
        model = LlamaForCausalLM(cfg)
    _scramble(model, seed)
    return model.eval()


def tiny_hf_dir(root, vocab: int = 512, softcap: float | None = None, init: float = 0.02):
    """A random 2-layer Gemma3 saved as an HF checkpoint under `root` (built once per settings)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    directory = root / f"tiny-{vocab}-{softcap}-{init}"
    if not directory.exists():
        torch.manual_seed(1234)
        cfg = Gemma3TextConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
            initializer_range=init, final_logit_softcapping=softcap,
            pad_token_id=0, bos_token_id=2, eos_token_id=1,
        )
        Gemma3ForCausalLM(cfg).save_pretrained(directory)
    return directory
