"""GGUF export round trips: transformers (+PEFT) vs real llama.cpp on the written files.

Tiny random models (262144-token vocabulary so the bundled tokenizer fits, hidden 64) are
built here, exported with `write_model_gguf`, and llama.cpp's full next-token log-prob
matrices are compared with transformers' at every position.

Measured on the 2-core CPU box (llama.cpp context with f32 KV cache, no flash attention):
- llama arch: max |Δ log p| ≈ 7e-6 (model), 5e-6..1.5e-5 (with LoRA)  -> tolerance 1e-4
- gemma3:     max |Δ log p| ≈ 3.3e-3 (model), 3.5e-3 (with LoRA); ggml's GELU uses an fp16
  lookup table, SiLU models match to 1e-5                             -> tolerance 1.5e-2
  A wrong convention is far above that: no (1 + w) on norms gives ~25, a wrong sliding
  window ~3-6 from the first masked position, a wrong local rope theta ~0.03-0.1.
- merged LoRA written as f16: max |Δ| ≈ 0.014; as q8_0: correlation ≈ 0.9999.
- slow test, bundled Gemma 3 270M dequantized to an f32 GGUF + random LoRA: top-50
  max |Δ| ≈ 5e-3..1e-2. Q4_K_M base + the same LoRA: llama.cpp's log-prob deltas vs
  transformers' correlate at ≈ 0.97 with norm ratio ≈ 1.0 (mean |delta| ≈ 0.5 nats; the
  residual, ≈ 0.12 nats, is the quantized base's own noise and does not grow with the adapter).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from minisir import export
from minisir.assets import bundled_model_path
from minisir.errors import MinisirError
from tiny_models import tiny_model

torch.set_num_threads(1)  # the machine's 2 cores are shared

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = [2, 100, 2000, 30000, 5, 77, 1234, 999, 4242, 17, 818, 9, 262000, 3]  # > sliding window
TOL = {"gemma3": 1.5e-2, "llama": 1e-4}


# ---------------------------------------------------------------- llama.cpp helper


@pytest.fixture(scope="module")
def ll():
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.llama_backend_init()
    cb = llama_cpp.llama_log_callback(lambda level, text, user: None)
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    yield llama_cpp
    llama_cpp.llama_log_set(ctypes.cast(None, llama_cpp.llama_log_callback), ctypes.c_void_p(0))


class Llama:
    """Bare llama.cpp model + context: full log-prob rows, greedy generation, LoRA."""

    def __init__(self, lib, path: Path, adapter: Path | None = None, exact: bool = True, n_ctx: int = 128):
        self.lib = lib
        params = lib.llama_model_default_params()
        params.use_extra_bufts = False  # AMX kernels SIGILL on these CPUs (DESIGN.md)
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        assert self.model, f"llama.cpp could not load {path}"
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
        cparams.n_threads = cparams.n_threads_batch = 2
        if exact:  # f16 KV cache / flash attention would add ~1e-3 of their own
            cparams.type_k = cparams.type_v = lib.GGML_TYPE_F32
            cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        assert self.ctx
        self.adapter = None
        if adapter is not None:
            self.adapter = lib.llama_adapter_lora_init(self.model, str(adapter).encode())
            assert self.adapter, f"llama.cpp refused adapter {adapter}"
            arr = (lib.llama_adapter_lora_p_ctypes * 1)(self.adapter)
            assert lib.llama_set_adapters_lora(self.ctx, arr, 1, (ctypes.c_float * 1)(1.0)) == 0

    def close(self) -> None:
        self.lib.llama_free(self.ctx)
        if self.adapter:
            self.lib.llama_adapter_lora_free(self.adapter)
        self.lib.llama_model_free(self.model)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buf = (self.lib.llama_token * (len(raw) + 8))()
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, False)
        return list(buf[:n])

    def detokenize(self, ids: list[int]) -> str:
        out = b""
        for t in ids:
            buf = ctypes.create_string_buffer(256)
            n = self.lib.llama_token_to_piece(self.vocab, t, buf, len(buf), 0, False)
            out += buf.raw[:n]
        return out.decode("utf-8")

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def _decode(self, ids: list[int], start: int) -> None:
        b = self.lib.llama_batch_init(len(ids), 0, 1)
        for i, t in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, start + i, 1, True
            b.seq_id[i][0] = 0
        b.n_tokens = len(ids)
        rc = self.lib.llama_decode(self.ctx, b)
        self.lib.llama_batch_free(b)
        assert rc == 0

    def logprobs(self, ids: list[int]) -> np.ndarray:
        """(len(ids), vocab) float64 log-softmax of llama.cpp's logits at every position."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self._decode(ids, 0)
        x = np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(len(ids), self.n_vocab))
        return torch.log_softmax(torch.from_numpy(x.astype(np.float64)), -1).numpy()

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """n tokens from llama.cpp's own greedy sampler."""
        lib = self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        out: list[int] = []
        try:
            self._decode(ids, 0)
            for _ in range(n):
                tok = lib.llama_sampler_sample(chain, self.ctx, -1)
                out.append(tok)
                self._decode([tok], len(ids) + len(out) - 1)
        finally:
            lib.llama_sampler_free(chain)
        return out


# ---------------------------------------------------------------- tiny models


def hf_logprobs(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), -1).numpy()


def add_lora(model, seed: int, sigma: float = 0.3, **cfg):
    from peft import LoraConfig, get_peft_model

    cfg.setdefault("r", 4)
    cfg.setdefault("lora_alpha", 8)
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


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def tiny(request, tmp_path_factory, tok_gguf):
    arch = request.param
    model = tiny_model(arch)
    path = export.write_model_gguf(model, tmp_path_factory.mktemp(arch) / "tiny-f32.gguf", tok_gguf)
    return arch, model, path


# ---------------------------------------------------------------- 1. full model


def test_model_gguf_matches_transformers(ll, tiny):
    arch, model, path = tiny
    ref = hf_logprobs(model, IDS)
    assert ref.std() > 1.0  # log-probs are spread: a mismatch cannot hide
    llm = Llama(ll, path)
    try:
        got = llm.logprobs(IDS)
        assert llm.n_vocab == 262144
    finally:
        llm.close()
    diff = np.abs(got - ref).max()
    assert diff < TOL[arch], f"{arch}: max |Δ log p| = {diff:.2e}"


def test_model_gguf_metadata_and_tokenizer(ll, tiny, tok_gguf):
    # read through llama.cpp: gguf.GGUFReader needs ~20 s per 262k-token vocabulary
    arch, model, path = tiny
    ours, bundled = Llama(ll, path), Llama(ll, tok_gguf)
    try:
        assert ours.meta("general.architecture") == arch
        assert ours.meta(f"{arch}.block_count") == str(model.config.num_hidden_layers)
        assert ours.meta("general.file_type") == "0"  # all f32
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            assert ours.meta(key) == bundled.meta(key)
        for text in ("Hello world", "  12+7 = 19 \\boxed{19}", "naïve café ∑ 😀\n\tend"):
            ids = ours.tokenize(text)
            assert ids == bundled.tokenize(text) and ids[0] == 2
            assert ours.detokenize(ids[1:]) == text
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

    llm = Llama(ll, path, adapter=adapter)
    try:
        got = llm.logprobs(IDS)
    finally:
        llm.close()
    diff = np.abs(got - ref).max()
    assert diff < TOL[arch], f"{arch} {lora_cfg}: max |Δ log p| = {diff:.2e}"


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
    arch, model, path = tiny
    if arch != "gemma3":
        pytest.skip("quantization is architecture-independent; gemma3 is the product's model")
    dst = export.quantize_gguf(path, tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4_k_m.gguf"]
    # hidden 64 is too narrow for K-quant blocks: llama.cpp falls back to q5_0/q8_0 there
    assert dst.stat().st_size < path.stat().st_size / 2.5  # measured 24 MB from 74 MB
    f32, q = Llama(ll, path), Llama(ll, dst)
    try:
        assert q.meta("general.file_type") == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        ref, got = f32.logprobs(IDS), q.logprobs(IDS)
        tokens = q.greedy(IDS[:5], 8)
        assert f32.greedy(IDS[:5], 8) == [int(t) for t in np.argmax(_hf_greedy_logprobs(model, IDS[:5], 8), -1)]
    finally:
        f32.close()
        q.close()
    assert len(tokens) == 8 and all(0 <= t < 262144 for t in tokens)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.97  # measured 0.998 gemma3, 0.985 llama


def _hf_greedy_logprobs(model, ids: list[int], n: int) -> np.ndarray:
    """Log-prob rows of transformers' own greedy continuation (one row per new token)."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, do_sample=False, output_scores=True,
            return_dict_in_generate=True, pad_token_id=0,
        )
    return torch.stack([s[0] for s in out.scores]).double().numpy()


def test_export_merged(ll, tok_gguf, tmp_path):
    model = tiny_model("gemma3", seed=3)
    peft_model = add_lora(model, seed=4)
    ref = hf_logprobs(peft_model, IDS)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}

    f16 = export.export_merged(peft_model, tmp_path / "merged-f16.gguf", tok_gguf, qtype="f16")
    q8 = export.export_merged(peft_model, tmp_path / "merged-q8_0.gguf", tok_gguf, qtype="q8_0")
    after = peft_model.state_dict()  # the caller's model is untouched (merged on a copy)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged-f16.gguf", "merged-q8_0.gguf"]

    results = {}
    for name, path in (("f16", f16), ("q8_0", q8)):
        llm = Llama(ll, path)
        try:
            results[name] = llm.logprobs(IDS)
            if name == "q8_0":
                assert len(llm.greedy(IDS[:4], 4)) == 4
        finally:
            llm.close()
    assert np.abs(results["f16"] - ref).max() < 0.05  # fp16 weights: measured 0.014
    assert np.corrcoef(results["q8_0"].ravel(), ref.ravel())[0, 1] > 0.999  # measured 0.99991


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
