"""Write PyTorch models as GGUF files that llama.cpp loads.

Two products:
- a LoRA adapter GGUF (hot-swapped into the sampler after every training step), written here:
  llama.cpp's tensor names, PEFT's A/B, and llama's rotary row permutation on B for q/k; and
- a full model GGUF (merged LoRA, optionally quantized) that llama.cpp / Ollama run directly,
  written by llama.cpp's own converter (minisir.convert) with the sampler's tokenizer copied
  from its GGUF; tests also use it to build tiny random models.

Every file is written under a temporary name in the target directory, then renamed, so a
reader never sees a half-written file (minisir.atomic).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_file
from .errors import MinisirError

log = logging.getLogger(__name__)

# HF config.model_type -> llama.cpp architecture name.
HF_TO_GGUF_ARCH = {
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
    "gemma2": "gemma2",
    "gemma": "gemma",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}
# Architectures llama.cpp's converter stores with q/k rows permuted (LlamaModel.permute: llama.cpp
# rotates adjacent pairs there); qwen2/qwen3 and Gemma use llama.cpp's NEOX rope, unpermuted.
PERMUTED_QK_ARCHS = {"llama"}
# Full-model export: the architectures checked end to end against llama.cpp (tests/test_export.py).
MODEL_ARCHS = {"gemma2", "gemma3", "llama", "qwen2", "qwen3"}
MODEL_TYPES = {"gemma2", "gemma3_text", "gemma3", "llama", "qwen2", "qwen3"}  # e.g. not mistral (sliding window)

LORA_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_PEFT_PREFIX = "base_model.model."
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)$")


class ExportError(MinisirError):
    """A model or adapter cannot be written in a form llama.cpp computes identically."""


# ---------------------------------------------------------------- helpers


def _gguf():
    import gguf  # local import: export is optional for most commands

    return gguf


def gguf_architecture(config: Any, architecture: str | None = None) -> str:
    """llama.cpp architecture name for an HF config (explicit `architecture` wins)."""
    if architecture:
        return architecture
    model_type = getattr(config, "model_type", None)
    arch = HF_TO_GGUF_ARCH.get(str(model_type))
    if arch is None:
        raise ExportError(
            f"export: model_type {model_type!r} has no known llama.cpp architecture; "
            f"pass architecture= (one of {sorted(set(HF_TO_GGUF_ARCH.values()))})"
        )
    return arch


def _model_arch_enum(arch: str):
    gguf = _gguf()
    for key, name in gguf.MODEL_ARCH_NAMES.items():
        if name == arch:
            return key
    raise ExportError(f"export: architecture {arch!r} is unknown to the installed gguf package; upgrade gguf")


def _permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotary layout (halves) -> llama.cpp layout (interleaved pairs), per head, on rows."""
    if w.shape[0] % (2 * n_head):
        raise ExportError(f"export: cannot permute {w.shape[0]} rows into {n_head} rotary heads")
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


# ---------------------------------------------------------------- LoRA adapter


def _lora_layers(peft_model) -> Iterator[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            yield name.removeprefix(_PEFT_PREFIX), module


def write_lora_gguf(peft_model, path: Path, architecture: str | None = None) -> Path:
    """Write the active LoRA of a PEFT model as a llama.cpp adapter GGUF (float32).

    llama.cpp scales every delta by alpha / rank(tensor) from one global alpha, so PEFT's
    per-module scaling (rslora, alpha_pattern, rank_pattern) is folded into B where it differs.
    """
    gguf = _gguf()
    path = Path(path)
    peft_config = getattr(peft_model, "peft_config", None)
    if not peft_config:
        raise ExportError("export: write_lora_gguf needs a PEFT model (peft.get_peft_model(...)); got a plain model")
    adapters = list(getattr(peft_model, "active_adapters", None) or [peft_model.active_adapter])
    if len(adapters) != 1:
        raise ExportError(f"export: {len(adapters)} active LoRA adapters {adapters}; activate exactly one")
    adapter = adapters[0]
    cfg = peft_config[adapter]
    if str(getattr(cfg, "peft_type", "LORA")).split(".")[-1].upper() != "LORA":
        raise ExportError(f"export: adapter {adapter!r} is {cfg.peft_type}, only LoRA can be written for llama.cpp")
    if getattr(cfg, "use_dora", False):
        raise ExportError("export: DoRA adapters are not supported by llama.cpp; train with use_dora=False")
    if getattr(cfg, "modules_to_save", None):
        raise ExportError(
            f"export: modules_to_save={cfg.modules_to_save} cannot be stored in a llama.cpp adapter; "
            "drop it from the LoRA config or use export_merged"
        )
    alpha = float(cfg.lora_alpha)
    if not alpha > 0:
        raise ExportError(f"export: lora_alpha={alpha} must be > 0 (llama.cpp treats alpha 0 as scale 1)")

    base_config = peft_model.get_base_model().config
    arch = gguf_architecture(base_config, architecture)
    n_layers = int(base_config.num_hidden_layers)
    name_map = gguf.get_tensor_name_map(_model_arch_enum(arch), n_layers)
    n_head = int(base_config.num_attention_heads)
    n_head_kv = int(getattr(base_config, "num_key_value_heads", None) or n_head)

    tensors: dict[str, np.ndarray] = {}
    for hf_name, layer in _lora_layers(peft_model):
        if adapter in getattr(layer, "lora_embedding_A", {}):
            raise ExportError(
                f"export: LoRA on {hf_name} (an embedding) has no llama.cpp adapter tensor; "
                "target only q/k/v/o_proj and gate/up/down_proj"
            )
        if adapter not in layer.lora_A:
            continue
        if getattr(layer, "lora_bias", {}).get(adapter, False):
            raise ExportError(f"export: {hf_name} has lora_bias=True, which llama.cpp adapters cannot hold")
        if getattr(layer, "fan_in_fan_out", False):
            raise ExportError(f"export: {hf_name} uses fan_in_fan_out (Conv1D); only nn.Linear LoRAs are supported")
        if not isinstance(layer.lora_A[adapter], torch.nn.Linear):
            raise ExportError(f"export: {hf_name} is a {type(layer).__name__} LoRA; only nn.Linear LoRAs are supported")
        gguf_name = name_map.get_name(hf_name)
        m = _BLOCK_RE.match(gguf_name or "")
        if m is None or m.group(2) not in LORA_TARGETS:
            raise ExportError(
                f"export: LoRA on {hf_name} has no llama.cpp adapter tensor; "
                "target only q/k/v/o_proj and gate/up/down_proj"
            )
        a = _numpy(layer.lora_A[adapter].weight)  # (r, in)
        b = _numpy(layer.lora_B[adapter].weight)  # (out, r)
        rank = a.shape[0]
        fold = float(layer.scaling[adapter]) * rank / alpha  # 1.0 for plain LoRA
        if not math.isclose(fold, 1.0, rel_tol=1e-6):
            b = b * np.float32(fold)
        if arch in PERMUTED_QK_ARCHS and m.group(2) in ("attn_q", "attn_k"):
            b = _permute_rows(b, n_head if m.group(2) == "attn_q" else n_head_kv)
        tensors[f"{gguf_name}.weight.lora_a"] = np.ascontiguousarray(a, dtype=np.float32)
        tensors[f"{gguf_name}.weight.lora_b"] = np.ascontiguousarray(b, dtype=np.float32)
    if not tensors:
        raise ExportError(f"export: adapter {adapter!r} has no LoRA layers to write")

    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(f"minisir LoRA r{cfg.r}")
        for name in sorted(tensors, key=_tensor_sort_key):
            writer.add_tensor(name, tensors[name])
        _write(writer)
    log.info("wrote LoRA adapter %s (%d tensors, arch %s, alpha %g)", path, len(tensors), arch, alpha)
    return path


def _tensor_sort_key(name: str) -> tuple[int, str]:
    m = re.match(r"blk\.(\d+)\.", name)
    return (int(m.group(1)) if m else -1, name)


# ---------------------------------------------------------------- full model


def _tokenizer_vocab_size(tokenizer_gguf: Path) -> int:
    """Number of tokens in a GGUF's tokenizer.ggml.tokens (0 when it has none)."""
    from .errors import ModelNotFound
    from .gguf_info import read_gguf_info

    try:
        return int(read_gguf_info(tokenizer_gguf).lengths.get("tokenizer.ggml.tokens", 0))
    except ModelNotFound as exc:
        raise ExportError(f"export: {exc}") from None


def _rope(config: Any, kind: str | None = None) -> dict:
    params = getattr(config, "rope_parameters", None) or {}
    if kind is not None and kind in params:
        params = params[kind]
    return dict(params)


def _sliding_pattern(config: Any, arch: str) -> list[bool]:
    """Gemma's sliding-window layers as llama.cpp reads them (written explicitly: the converter
    leaves them to llama.cpp's per-architecture default, every 2nd or 6th layer global)."""
    kinds = list(getattr(config, "layer_types", None) or [])
    if len(kinds) != config.num_hidden_layers or not set(kinds) <= {"sliding_attention", "full_attention"}:
        raise ExportError(f"export: {arch} layer_types {kinds} must list sliding_attention/full_attention per layer")
    if "sliding_attention" in kinds and not config.sliding_window:
        raise ExportError(f"export: {arch} has sliding_attention layers but no sliding_window; set sliding_window")
    return [k == "sliding_attention" for k in kinds]


def _check_gemma(config: Any, arch: str) -> None:
    """Refuse Gemma configs llama.cpp's graph would compute differently."""
    head_dim = int(config.head_dim)
    big = config.num_hidden_layers == (62 if arch == "gemma3" else 46)  # llama.cpp's 27B rule
    want = (config.hidden_size // config.num_attention_heads) if big else head_dim
    if float(config.query_pre_attn_scalar) != float(want):
        raise ExportError(
            f"export: {arch} query_pre_attn_scalar={config.query_pre_attn_scalar} but llama.cpp uses {want} "
            "for this size; set query_pre_attn_scalar to match"
        )
    if config.hidden_activation != "gelu_pytorch_tanh":
        raise ExportError(f"export: {arch} hidden_activation={config.hidden_activation!r}; llama.cpp uses gelu (tanh)")
    if getattr(config, "use_bidirectional_attention", False):
        raise ExportError(f"export: {arch} use_bidirectional_attention=True is not a causal LM llama.cpp can run")
    if arch == "gemma3":
        local = _rope(config, "sliding_attention")
        if local.get("rope_type", "default") != "default":
            raise ExportError(f"export: gemma3 sliding-attention rope {local} is not supported (default rope only)")
        if config.attn_logit_softcapping:
            raise ExportError("export: gemma3 attn_logit_softcapping is not computed by llama.cpp; set it to None")
    elif _rope(config).get("rope_type", "default") != "default":
        raise ExportError(f"export: gemma2 rope {_rope(config)} is not supported (default rope only)")


def _model_checks(config: Any) -> tuple[str, list[tuple[str, list]]]:
    """(llama.cpp architecture, extra converter writer calls) for a model minisir can export."""
    arch = gguf_architecture(config)
    if arch not in MODEL_ARCHS or config.model_type not in MODEL_TYPES:
        raise ExportError(f"export: full-model export supports {sorted(MODEL_ARCHS)}, not {arch!r}")
    if arch in ("gemma2", "gemma3"):
        _check_gemma(config, arch)
        return arch, [("add_sliding_window_pattern", [_sliding_pattern(config, arch)])]
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ExportError(f"export: {arch} hidden_act={config.hidden_act!r}; llama.cpp uses silu")
    if getattr(config, "use_sliding_window", False):
        raise ExportError(f"export: {arch} use_sliding_window=True is not computed by llama.cpp; set it to False")
    return arch, []


def _has_lora(model) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def write_model_gguf(model, path: Path, tokenizer_gguf: Path, ftype: str = "f32") -> Path:
    """Write a full HF causal LM as a GGUF llama.cpp loads, with llama.cpp's own converter.

    The model is saved as an HF checkpoint in a temporary directory beside `path` and
    converted by convert_hf_to_gguf.py (minisir.convert). The vocabulary and tokenizer
    metadata come from `tokenizer_gguf` because minisir never needs an HF tokenizer:
    sampler and trainer share llama.cpp's token ids.
    """
    from .convert import run_converter

    path, tokenizer_gguf = Path(path), Path(tokenizer_gguf)
    if ftype not in ("f32", "f16", "bf16"):
        raise ExportError(f"export: ftype={ftype!r}; use 'f32', 'f16' or 'bf16' (quantize with quantize_gguf)")
    if _has_lora(model):
        raise ExportError("export: write_model_gguf got a model with LoRA layers; use export_merged to merge them first")
    config = model.config
    arch, writer_calls = _model_checks(config)
    n_vocab = _tokenizer_vocab_size(tokenizer_gguf)
    if not n_vocab:
        raise ExportError(f"export: {tokenizer_gguf} has no tokenizer.ggml.tokens; pass a GGUF with a vocabulary")
    if int(config.vocab_size) != n_vocab:
        raise ExportError(
            f"export: model vocab_size={config.vocab_size} but {tokenizer_gguf.name} has {n_vocab} tokens; "
            "pass the GGUF whose tokenizer the model was trained with"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".minisir-export-") as tmpdir:
        hf_dir = Path(tmpdir) / "hf"
        model.save_pretrained(str(hf_dir))
        # The converter counts the vocabulary in tokenizer.json for some architectures (Gemma 3 drops
        # embedding rows beyond it); the real vocabulary is copied from tokenizer_gguf instead.
        (hf_dir / "tokenizer.json").write_text(json.dumps(
            {"model": {"vocab": {f"<minisir-{i}>": i for i in range(n_vocab)}}, "added_tokens": []}))
        name = Path(str(getattr(config, "_name_or_path", "") or "")).name or f"minisir {arch}"
        with atomic_file(path) as tmp:
            run_converter(hf_dir, tmp, ftype, tokenizer_gguf, writer_calls, name=name)
    log.info("wrote %s model %s (%s)", arch, path, ftype)
    return path


# ---------------------------------------------------------------- quantize / merged export


def _llama_ftype(qtype: str) -> int:
    gguf = _gguf()
    try:
        return int(gguf.LlamaFileType[f"MOSTLY_{qtype.upper()}"])
    except KeyError:
        known = sorted(n.removeprefix("MOSTLY_").lower() for n in gguf.LlamaFileType.__members__ if n.startswith("MOSTLY_"))
        raise ExportError(f"export: unknown quantization type {qtype!r}; use one of {known}") from None


def quantize_gguf(src: Path, dst: Path, qtype: str = "q4_k_m", n_threads: int | None = None) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (same code as llama-quantize)."""
    import ctypes

    import llama_cpp

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ExportError(f"export: {src} does not exist; write the model first")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _llama_ftype(qtype)
    params.nthread = int(n_threads or os.cpu_count() or 1)
    llama_cpp.llama_backend_init()
    with atomic_file(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"export: llama.cpp failed to quantize {src} to {qtype} (code {rc}); see its log")
    log.info("quantized %s -> %s (%s)", src, dst, qtype)
    return dst


def export_merged(model, out: Path, tokenizer_gguf: Path, qtype: str = "f16") -> Path:
    """Merge a PEFT LoRA into (a copy of) its base and write a standalone GGUF.

    The caller's model is left untouched: merging in place and unmerging would leave
    rounding error in the weights still being trained. Quantized types go through a lossless
    intermediate (bf16 for a bf16 model, else f32) and llama.cpp's own quantizer.
    """
    out = Path(out)
    qtype = qtype.lower()
    if qtype not in ("f32", "f16", "bf16"):
        _llama_ftype(qtype)  # reject unknown types before any work
    if _has_lora(model):
        model = copy.deepcopy(model).merge_and_unload()
    if qtype in ("f32", "f16", "bf16"):
        return write_model_gguf(model, out, tokenizer_gguf, ftype=qtype)
    lossless = "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "f32"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".minisir-export-") as tmpdir:
        full = write_model_gguf(model, Path(tmpdir) / f"model-{lossless}.gguf", tokenizer_gguf, ftype=lossless)
        del model
        return quantize_gguf(full, out, qtype)
