"""GGUF export round trips: transformers (+PEFT) vs real llama.cpp on the written files.

One tiny random model per architecture a recipe names (gemma2, gemma3, llama with Llama 3's
rope scaling, qwen2 with q/k/v biases, qwen3 with q/k norms; hidden 64, the 264-token tokenizer
of tiny_models) is written with `write_model_gguf` (llama.cpp's own converter), and llama.cpp's
full next-token log-prob matrices are compared with transformers' at every position: the
model, the model + a GGUF LoRA adapter, and the merged export at f16 and q8_0.

Measured on the 2-core CPU box (llama.cpp context with f32 KV cache, no flash attention):
- llama/qwen2/qwen3: max |Δ log p| ≈ 4e-6..3e-5 (model and with LoRA)   -> tolerance 1e-4
- gemma2/gemma3: max |Δ log p| ≈ 2e-3..3.5e-3; ggml's GELU uses an fp16 lookup table,
  SiLU models match to 1e-5                                             -> tolerance 1.5e-2
  A wrong convention is far above that: no (1 + w) on norms gives ~25, a wrong sliding
  window ~3-6 from the first masked position, Gemma-2's query scale left at 256 ~3.8,
  Llama 3's rope factors dropped ~3.7, a wrong local rope theta ~0.03-0.1.
- merged LoRA written as f16: max |Δ| ≈ 0.008..0.04; as q8_0: correlation ≈ 0.9985..0.9999.
- slow test, bundled Gemma 3 270M dequantized to an f32 GGUF + random LoRA: top-50
  max |Δ| ≈ 5e-3..1.7e-2. Q4_K_M base + the same LoRA: llama.cpp's log-prob deltas vs
  transformers' correlate at ≈ 0.97-0.98 with norm ratio ≈ 1.0 (mean |delta| ≈ 0.5 nats; the
  residual, ≈ 0.12 nats, is the quantized base's own noise and does not grow with the adapter).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from minisir import export
from minisir.assets import bundled_model_path
from minisir.errors import MinisirError
from llama_ref import Llama, ll  # noqa: F401 (ll is a fixture)
from tiny_models import ARCHS, tiny_model, tiny_tokenizer_gguf

torch.set_num_threads(1)  # the machine's 2 cores are shared

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# 20 positions: past the sliding window (4) and the tiny llama's rope-scaling wavelengths (16..64)
IDS = [259, 100, 200, 30, 5, 77, 123, 99, 42, 17, 88, 9, 260, 3, 50, 60, 70, 80, 90, 255]
BIG_IDS = [2, 100, 2000, 30000, 5, 77, 1234, 999, 4242, 17, 818, 9, 262000, 3]  # bundled vocabulary
TOL = {"gemma2": 1.5e-2, "gemma3": 1.5e-2, "llama": 1e-4, "qwen2": 1e-4, "qwen3": 1e-4}


# ---------------------------------------------------------------- tiny models


def hf_logprobs(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), -1).numpy()


def add_lora(model, seed: int, sigma: float = 0.3, **cfg):
    from peft import LoraConfig, get_peft_model

    cfg.setdefault("r", 4)
    cfg.setdefault("lora_alpha", 8)
    torch.manual_seed(seed)  # PEFT draws A from the global generator
    peft_model = get_peft_model(model, LoraConfig(target_modules=TARGETS, **cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT initialises B to zero: make the adapter do something
                p.copy_(torch.randn(p.shape, generator=g) * sigma)
    return peft_model.eval()


@pytest.fixture(scope="module")
def tok_gguf() -> Path:
    return bundled_model_path()


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory) -> tuple[Path, int]:
    return tiny_tokenizer_gguf(tmp_path_factory.mktemp("tok") / "tiny-tok.gguf")


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory, tiny_tok):
    arch = request.param
    model = tiny_model(arch, vocab=tiny_tok[1])
    path = export.write_model_gguf(model, tmp_path_factory.mktemp(arch) / "tiny-f32.gguf", tiny_tok[0])
    return arch, model, path


# ---------------------------------------------------------------- 1. full model


def test_model_gguf_matches_transformers(ll, tiny, tiny_tok):
    arch, model, path = tiny
    ref = hf_logprobs(model, IDS)
    assert ref.std() > 1.0  # log-probs are spread: a mismatch cannot hide
    llm = Llama(ll, path)
    try:
        got = llm.logprobs(IDS)
        assert llm.n_vocab == tiny_tok[1]
    finally:
        llm.close()
    diff = np.abs(got - ref).max()
    assert diff < TOL[arch], f"{arch}: max |Δ log p| = {diff:.2e}"


def test_model_gguf_metadata_and_tokenizer(ll, tiny, tiny_tok):
    arch, model, path = tiny
    ours, tok = Llama(ll, path), Llama(ll, tiny_tok[0], vocab_only=True)
    try:
        assert ours.meta("general.architecture") == arch
        assert ours.meta(f"{arch}.block_count") == str(model.config.num_hidden_layers)
        assert ours.meta("general.file_type") == "0"  # all f32
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id"):
            assert ours.meta(key) == tok.meta(key)
        for text in ("Hello world", "  12+7 = 19 \\boxed{19}", "<|im_start|>user\nnaïve ∑ 😀<|im_end|>"):
            ids = ours.tokenize(text)
            assert ids == tok.tokenize(text)
            assert ours.detokenize(ids) == text  # parse_special=False: the tags are plain text here
    finally:
        ours.close()
        tok.close()


def test_bundled_tokenizer_is_copied_bit_for_bit(ll, tok_gguf, tmp_path):
    """A 262144-token Gemma 3 written with the bundled GGUF's tokenizer tokenizes as the bundled model."""
    model = tiny_model("gemma3")
    path = export.write_model_gguf(model, tmp_path / "tiny-big.gguf", tok_gguf, ftype="f16")
    ours, bundled = Llama(ll, path), Llama(ll, tok_gguf, vocab_only=True)
    try:
        assert ours.meta("general.file_type") == "1"  # mostly f16
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            assert ours.meta(key) == bundled.meta(key)
        for text in ("Hello world", "  12+7 = 19 \\boxed{19}", "naïve café ∑ 😀\n\tend"):
            ids = ours.tokenize(text)
            assert ids == bundled.tokenize(text) and ids[0] == 2
            assert ours.detokenize(ids[1:]) == text
        assert np.abs(ours.logprobs(BIG_IDS) - hf_logprobs(model, BIG_IDS)).max() < 0.05  # f16 weights
    finally:
        ours.close()
        bundled.close()


# ---------------------------------------------------------------- 2. LoRA adapter


@pytest.mark.parametrize(
    "lora_cfg",
    [
        {},
        {"use_rslora": True, "alpha_pattern": {"down_proj": 3.0}, "rank_pattern": {"v_proj": 2}},
    ],
    ids=["plain", "rslora+patterns"],
)
def test_lora_gguf_matches_peft(ll, tiny, tmp_path, lora_cfg):
    import gguf

    arch, model, path = tiny
    base = hf_logprobs(model, IDS)
    peft_model = add_lora(model, seed=1, **lora_cfg)
    try:
        ref = hf_logprobs(peft_model, IDS)
        adapter = export.write_lora_gguf(peft_model, tmp_path / "adapter.gguf")
    finally:
        peft_model.unload()  # give the module-scoped model back without LoRA layers
    assert np.abs(ref - base).max() > 1.0  # the adapter changes the model a lot

    fields = gguf.GGUFReader(str(adapter)).fields
    assert fields["general.type"].contents() == "adapter"
    assert fields["adapter.type"].contents() == "lora"
    assert fields["general.architecture"].contents() == arch
    assert fields["adapter.lora.alpha"].types == [gguf.GGUFValueType.FLOAT32]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.gguf"]  # no temp files left

    plain, llm = Llama(ll, path), Llama(ll, path, adapter=adapter)
    try:
        got_base, got = plain.logprobs(IDS), llm.logprobs(IDS)
    finally:
        plain.close()
        llm.close()
    diff = np.abs(got - ref).max()
    assert diff < TOL[arch], f"{arch} {lora_cfg}: max |Δ log p| = {diff:.2e}"
    # the adapter moves llama.cpp's log-probs as it moves transformers'
    moved = np.abs((got - got_base) - (ref - base)).max()
    assert moved < 2 * TOL[arch], f"{arch} {lora_cfg}: adapter deltas differ by {moved:.2e}"


# ---------------------------------------------------------------- 3. bundled Q4_K_M


def _load_bundled_hf(gguf_path: Path):
    try:
        from minisir.hf_model import load_hf_model
    except ImportError:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        ).eval()
    return load_hf_model(gguf_path, dtype=torch.float32, device="cpu")


@pytest.mark.slow  # ~65 s on 2 shared cores (1 GB f32 GGUF + three llama.cpp contexts)
def test_bundled_model_lora(ll, tok_gguf, tmp_path):
    torch.set_num_threads(2)
    try:
        model = _load_bundled_hf(tok_gguf)
        # (a) the dequantized weights as an f32 GGUF: llama.cpp + adapter == PEFT, exactly
        full = export.write_model_gguf(model, tmp_path / "full-f32.gguf", tok_gguf)
        peft_model = add_lora(model, seed=2, sigma=0.02, r=8, lora_alpha=16)
        adapter = export.write_lora_gguf(peft_model, tmp_path / "adapter.gguf")
        texts = [
            "The capital of France is Paris, and the capital of Italy is",
            "Question: What is 12 + 7?\nAnswer: 12 + 7 = 19.\nQuestion: What is 3 * 5?\nAnswer:",
        ]
        q4, q4_lora = Llama(ll, tok_gguf), Llama(ll, tok_gguf, adapter=adapter)
        exact = Llama(ll, full, adapter=adapter)
        deltas_hf, deltas_q4 = [], []
        try:
            for text in texts:
                ids = q4.tokenize(text)
                with peft_model.disable_adapter():
                    hf_base = hf_logprobs(peft_model, ids)
                hf_lora = hf_logprobs(peft_model, ids)
                top = np.argsort(-hf_base, axis=-1)[:, :50]  # where the probability mass is
                assert np.abs(np.take_along_axis(hf_lora - hf_base, top, -1)).max() > 1.0
                diff = np.abs(np.take_along_axis(exact.logprobs(ids) - hf_lora, top, -1)).max()
                print(f"f32 270M + LoRA: top-50 max |diff| {diff:.2e}")
                assert diff < 3e-2, f"f32 270M + LoRA: top-50 max |Δ log p| = {diff:.2e}"
                # (b) the Q4_K_M base the sampler really uses: the adapter moves it the same way
                q4_delta = q4_lora.logprobs(ids) - q4.logprobs(ids)
                deltas_hf.append(np.take_along_axis(hf_lora - hf_base, top[:, :5], -1).ravel())
                deltas_q4.append(np.take_along_axis(q4_delta, top[:, :5], -1).ravel())
        finally:
            for llm in (q4, q4_lora, exact):
                llm.close()
            full.unlink()  # 1 GB
        dh, dq = np.concatenate(deltas_hf), np.concatenate(deltas_q4)
        corr = np.corrcoef(dh, dq)[0, 1]
        ratio = np.linalg.norm(dq) / np.linalg.norm(dh)
        print(f"Q4_K_M + LoRA: corr {corr:.3f} ratio {ratio:.3f} mean |delta| {np.abs(dh).mean():.3f}")
        assert corr > 0.9, f"Q4_K_M + LoRA delta correlation {corr:.3f}"
        assert 0.8 < ratio < 1.25, f"Q4_K_M + LoRA delta norm ratio {ratio:.3f}"
    finally:
        torch.set_num_threads(1)


# ---------------------------------------------------------------- 4. quantize / merged export


def test_quantize_gguf_loads_and_generates(ll, tiny, tmp_path):
    arch, model, path = tiny  # every architecture a recipe can name (their tensor sets differ: biases, q/k norms)
    dst = export.quantize_gguf(path, tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4_k_m.gguf"]
    # hidden 64 is too narrow for K-quant blocks: llama.cpp falls back to q5_0/q8_0 there
    assert dst.stat().st_size < path.stat().st_size / 2.5
    f32, q = Llama(ll, path), Llama(ll, dst)
    try:
        assert q.meta("general.file_type") == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        ref, got = f32.logprobs(IDS), q.logprobs(IDS)
        tokens = q.greedy(IDS[:5], 8)
        assert f32.greedy(IDS[:5], 8) == [int(t) for t in np.argmax(_hf_greedy_logprobs(model, IDS[:5], 8), -1)]
    finally:
        f32.close()
        q.close()
    assert len(tokens) == 8 and all(0 <= t < model.config.vocab_size for t in tokens)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.97  # measured 0.998 gemma3, 0.985 llama


def _hf_greedy_logprobs(model, ids: list[int], n: int) -> np.ndarray:
    """Log-prob rows of transformers' own greedy continuation (one row per new token)."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, do_sample=False, output_scores=True,
            return_dict_in_generate=True, pad_token_id=0,
        )
    return torch.stack([s[0] for s in out.scores]).double().numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_export_merged(ll, tiny_tok, tmp_path, arch):
    model = tiny_model(arch, seed=3, vocab=tiny_tok[1])
    peft_model = add_lora(model, seed=4)
    ref = hf_logprobs(peft_model, IDS)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}

    f16 = export.export_merged(peft_model, tmp_path / "merged-f16.gguf", tiny_tok[0], qtype="f16")
    q8 = export.export_merged(peft_model, tmp_path / "merged-q8_0.gguf", tiny_tok[0], qtype="q8_0")
    after = peft_model.state_dict()  # the caller's model is untouched (merged on a copy)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged-f16.gguf", "merged-q8_0.gguf"]

    results = {}
    for name, path in (("f16", f16), ("q8_0", q8)):
        llm = Llama(ll, path)
        try:
            assert llm.meta("general.architecture") == arch
            assert llm.meta("general.file_type") == {"f16": "1", "q8_0": "7"}[name]
            results[name] = llm.logprobs(IDS)
            if name == "q8_0":
                assert len(llm.greedy(IDS[:4], 4)) == 4
        finally:
            llm.close()
    f16_diff = np.abs(results["f16"] - ref).max()
    q8_diff = np.abs(results["q8_0"] - ref).mean()
    q8_corr = np.corrcoef(results["q8_0"].ravel(), ref.ravel())[0, 1]
    print(f"{arch} merged: f16 max |Δ| {f16_diff:.3g}, q8_0 mean |Δ| {q8_diff:.3g}, correlation {q8_corr:.5f}")
    assert f16_diff < 0.1  # fp16 weights: measured 0.008 (qwen3) .. 0.04 (llama)
    # q8_0 quantizes weights and, on CPU, activations; Gemma's soft-cap compresses its logits
    assert q8_diff < 0.3 and q8_corr > 0.995  # measured 0.03 / 0.9999 (Gemma, qwen3) .. 0.18 / 0.9985 (qwen2)


# ---------------------------------------------------------------- errors


def test_lora_refuses_what_llama_cpp_cannot_hold(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny_model("gemma3", vocab=512)
    with pytest.raises(MinisirError, match="PEFT model"):
        export.write_lora_gguf(model, tmp_path / "a.gguf")
    dora = get_peft_model(tiny_model("gemma3", vocab=512), LoraConfig(target_modules=["q_proj"], use_dora=True))
    with pytest.raises(MinisirError, match="DoRA"):
        export.write_lora_gguf(dora, tmp_path / "a.gguf")
    embed = get_peft_model(tiny_model("gemma3", vocab=512), LoraConfig(target_modules=["q_proj", "embed_tokens"]))
    with pytest.raises(MinisirError, match="embed_tokens"):
        export.write_lora_gguf(embed, tmp_path / "a.gguf")
    with pytest.raises(MinisirError, match="LoRA layers"):
        export.write_model_gguf(embed, tmp_path / "a.gguf", bundled_model_path())
    assert list(tmp_path.iterdir()) == []


def test_model_export_errors_leave_nothing(tmp_path, tok_gguf):
    small = tiny_model("gemma3", vocab=512)  # the bundled tokenizer has 262144 tokens
    with pytest.raises(MinisirError, match="vocab_size=512"):
        export.write_model_gguf(small, tmp_path / "m.gguf", tok_gguf)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temp file
    with pytest.raises(MinisirError, match="ftype"):
        export.write_model_gguf(small, tmp_path / "m.gguf", tok_gguf, ftype="q4_0")
    with pytest.raises(MinisirError, match="unknown quantization type"):
        export.export_merged(small, tmp_path / "m.gguf", tok_gguf, qtype="q9_z")
    small.config.query_pre_attn_scalar = 256
    with pytest.raises(MinisirError, match="query_pre_attn_scalar"):
        export.write_model_gguf(small, tmp_path / "m.gguf", tok_gguf)
    assert list(tmp_path.iterdir()) == []
