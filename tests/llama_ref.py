"""Reference llama.cpp for tests: a bare model + context giving full log-prob rows, greedy
generation and a LoRA adapter, through llama-cpp-python's low-level API (no minisir code)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch


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

    def __init__(self, lib, path: Path, adapter: Path | None = None, exact: bool = True, n_ctx: int = 128,
                 vocab_only: bool = False):
        self.lib = lib
        params = lib.llama_model_default_params()
        params.use_extra_bufts = False  # AMX kernels SIGILL on these CPUs (DESIGN.md)
        params.n_gpu_layers = 0
        params.vocab_only = vocab_only
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        assert self.model, f"llama.cpp could not load {path}"
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.ctx = self.adapter = None
        if vocab_only:
            return
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
        cparams.n_threads = cparams.n_threads_batch = 1  # 2 threads spin against the shared cores
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
        if self.ctx:
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
