"""Tiny random models for tests, one per architecture a recipe names, and a tiny tokenizer GGUF.

`tiny_model(arch)` defaults to a 262144-token vocabulary so the bundled tokenizer fits;
`tiny_tokenizer_gguf` writes a 264-token byte-level BPE vocabulary (with ChatML's special
tokens) that every architecture can use, so most tests need no 262k-row embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("gemma2", "gemma3", "llama", "qwen2", "qwen3")

# A ChatML template (Qwen's format, no system-prompt default) for chat-mode tests.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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
    """A random model of `arch` (hidden 64, 2-3 layers) with each architecture's own features:
    Gemma's soft-caps and sliding layers, Llama 3's rope scaling, Qwen2's q/k/v biases, Qwen3's
    q/k norms and a head_dim that is not hidden/heads."""
    import transformers as T

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)
    if arch == "gemma3":
        cfg = T.Gemma3TextConfig(
            **common, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            },
            final_logit_softcapping=30.0,
        )
        model = T.Gemma3ForCausalLM(cfg)
    elif arch == "gemma2":
        cfg = T.Gemma2Config(**common, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                             attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
        model = T.Gemma2ForCausalLM(cfg)
    elif arch == "llama":
        # Llama 3.2's rope scaling, with limits that matter within a few positions (wavelengths 16..64)
        cfg = T.LlamaConfig(**common, num_hidden_layers=2, tie_word_embeddings=True,
                            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 64})
        model = T.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = T.Qwen2Config(**common, num_hidden_layers=2, tie_word_embeddings=True)
        model = T.Qwen2ForCausalLM(cfg)
    elif arch == "qwen3":
        cfg = T.Qwen3Config(**common, num_hidden_layers=2, head_dim=32, tie_word_embeddings=False)
        model = T.Qwen3ForCausalLM(cfg)
    else:
        raise ValueError(f"no tiny {arch}; one of {ARCHS}")
    _scramble(model, seed)
    return model.eval()


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table (byte-level BPE tokens)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer_gguf(path: Path, chat_template: str | None = None) -> tuple[Path, int]:
    """A tensorless GGUF holding a 264-token byte-level BPE tokenizer; returns (path, vocab size).

    End of text and end of turn are <|im_end|> (eos), as in Qwen's chat models; no BOS is added.
    """
    import gguf

    tokens = _byte_chars() + [m.replace(" ", "") for m in TINY_MERGES] + TINY_SPECIALS
    types = [1] * (len(tokens) - len(TINY_SPECIALS)) + [3] * len(TINY_SPECIALS)  # normal, control
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(TINY_MERGES)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path), len(tokens)


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
