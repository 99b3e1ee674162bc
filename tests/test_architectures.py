"""Every architecture a recipe names, through the trainer: gemma2 (gemma2b.yaml), gemma3 (the
bundled model), llama (llama3b.yaml), qwen2 (qwen2.5-1.5b.yaml) and qwen3.

For a tiny random model of each (tests/tiny_models.py), written to GGUF by llama.cpp's converter:
- the trainer loads it from the GGUF (transformers dequantizes it, minisir sets what transformers'
  GGUF reader misses) and from the HF directory, and both score tokens as llama.cpp does;
- after a real GRPO step, the adapter the trainer exports moves llama.cpp's log-probs exactly
  as the trainer's own.
Tolerances as in test_export.py (GELU models 1.5e-2: ggml's fp16 GELU table; SiLU models 1e-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llama_ref import Llama, ll  # noqa: F401 (ll is a fixture)
from minisir.errors import ModelNotFound
from minisir.export import write_model_gguf
from minisir.gguf_info import GGUFInfo
from minisir.hf_model import _llama3_rope, _match_llama_cpp
from minisir.trainer import GRPOTrainer, Sample, TrainerConfig
from tiny_models import ARCHS, tiny_model, tiny_tokenizer_gguf

torch.set_num_threads(1)  # the machine's 2 cores are shared

IDS = [259, 100, 200, 30, 5, 77, 123, 99, 42, 17, 88, 9, 260, 3, 50, 60, 70, 80, 90, 255]
PROMPT = 6  # tokens of IDS that are the prompt; the rest is the scored completion
TOL = {"gemma2": 1.5e-2, "gemma3": 1.5e-2, "llama": 1e-4, "qwen2": 1e-4, "qwen3": 1e-4}


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    return tiny_tokenizer_gguf(tmp_path_factory.mktemp("tok") / "tiny-tok.gguf")


@pytest.fixture(scope="module", params=ARCHS)
def built(request, tmp_path_factory, tiny_tok):
    """(arch, HF checkpoint dir, GGUF written from it by llama.cpp's converter)."""
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    model = tiny_model(arch, seed=5, vocab=tiny_tok[1])
    model.save_pretrained(root / "hf")
    return arch, root / "hf", write_model_gguf(model, root / f"tiny-{arch}.gguf", tiny_tok[0])


def _chosen(rows: np.ndarray, ids: list[int]) -> np.ndarray:
    """llama.cpp's log-prob of each completion token (row i predicts token i + 1)."""
    return np.array([rows[i - 1, ids[i]] for i in range(PROMPT, len(ids))])


def _llama_cpp_scores(lib, path, adapter=None) -> np.ndarray:
    llm = Llama(lib, path, adapter=adapter)
    try:
        return _chosen(llm.logprobs(IDS), IDS)
    finally:
        llm.close()


def test_trainer_from_gguf_and_hf_dir_scores_as_llama_cpp_and_its_adapter_moves_llama_cpp(
        ll, built, tmp_path, monkeypatch):
    arch, hf_dir, gguf = built
    monkeypatch.setenv("MINISIR_CACHE", str(tmp_path / "cache"))  # a fresh conversion of this GGUF
    cfg = TrainerConfig(lora_rank=4, lora_alpha=8, learning_rate=0.05, is_cap=None, sync_confidence=None)
    sample = Sample(IDS[:PROMPT], IDS[PROMPT:], [], 0.0, "probe")
    ref = _llama_cpp_scores(ll, gguf)
    assert ref.std() > 0.5  # spread: a wrong convention cannot hide

    from_dir = GRPOTrainer(cfg, None, hf_dir, seed=1)
    from_gguf = GRPOTrainer(cfg, gguf, None, seed=1)
    assert type(from_gguf._base) is type(from_dir._base)
    for name, trainer in (("hf_dir", from_dir), ("gguf", from_gguf)):
        got = np.array(trainer.logprobs([sample])[0])
        diff = np.abs(got - ref).max()
        assert diff < TOL[arch], f"{arch} trainer from {name} vs llama.cpp: max |Δ log p| = {diff:.2e}"

    # one GRPO step on a group of two completions, then the adapter the loop would hot-swap
    group = [Sample(IDS[:PROMPT], IDS[PROMPT:], [], 1.0, "g"),
             Sample(IDS[:PROMPT], IDS[PROMPT:][::-1], [], 0.0, "g")]
    before = np.array(from_gguf.logprobs([sample])[0])
    from_gguf.step(group)
    after = np.array(from_gguf.logprobs([sample])[0])
    assert np.abs(after - before).max() > 0.05  # the step moved the model: the check below can fail
    adapter = from_gguf.export_adapter(tmp_path / "step-0.gguf")
    moved = _llama_cpp_scores(ll, gguf, adapter)
    diff = np.abs((moved - ref) - (after - before)).max()
    assert diff < 2 * TOL[arch], f"{arch}: adapter moves llama.cpp by {diff:.2e} more or less than the trainer"


# ---------------------------------------------------------------- what transformers' GGUF reader misses


def _converter_rope_freqs(theta: float, head_dim: int, factor: float, low: float, high: float, old: int):
    """llama.cpp's converter (LlamaModel.generate_extra_tensors): the divisors it stores as rope_freqs."""
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi / (1.0 / theta ** (i / head_dim))
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def test_llama3_rope_is_recovered_from_rope_freqs():
    # Llama 3.2 3B's own rope: 128-dim heads, theta 500000, factor 32, low 1, high 4, 8192 tokens
    rope = _llama3_rope(_converter_rope_freqs(500000.0, 128, 32.0, 1.0, 4.0, 8192), 500000.0, 128)
    assert rope["rope_type"] == "llama3" and rope["original_max_position_embeddings"] == 8192
    assert rope["factor"] == pytest.approx(32.0)
    assert rope["low_freq_factor"] == pytest.approx(1.0, rel=1e-4)
    assert rope["high_freq_factor"] == pytest.approx(4.0, rel=1e-4)
    assert _llama3_rope(np.ones(64, dtype=np.float32), 500000.0, 128) is None  # no scaling at all


def _info(arch: str, **kv) -> GGUFInfo:
    from pathlib import Path

    return GGUFInfo(Path(f"{arch}.gguf"), kv={"general.architecture": arch, **{f"{arch}.{k}": v for k, v in kv.items()}})


def test_gemma2_gets_llama_cpp_defaults_where_the_gguf_is_silent():
    from transformers import Gemma2Config

    cfg = _match_llama_cpp(Gemma2Config(num_hidden_layers=4, head_dim=32, query_pre_attn_scalar=256,
                                        attn_logit_softcapping=None, final_logit_softcapping=None), _info("gemma2"))
    assert (cfg.attn_logit_softcapping, cfg.final_logit_softcapping, cfg.sliding_window) == (50.0, 30.0, 4096)
    assert cfg.query_pre_attn_scalar == 32  # llama.cpp scales by head_dim except for the 27B (46 layers)
    assert cfg.layer_types == ["sliding_attention", "full_attention"] * 2


def test_gguf_rope_transformers_cannot_rebuild_is_one_line():
    from transformers import Qwen2Config

    with pytest.raises(ModelNotFound, match="yarn rope scaling.*model.hf_dir"):
        _match_llama_cpp(Qwen2Config(num_hidden_layers=2), _info("qwen2", **{"rope.scaling.type": "yarn"}))
