"""Write PyTorch models as GGUF files that llama.cpp loads.

Two products:
- a LoRA adapter GGUF (hot-swapped into the sampler after every training step), and
- a full model GGUF (merged LoRA, optionally quantized) that llama.cpp / Ollama run directly;
  tests also use it to build tiny random models.

The conventions mirror llama.cpp's HF converter, checked against the inverse mapping in
transformers' GGUF loader: Gemma RMSNorm weights are stored as (1 + w), llama q/k rows are
permuted for llama.cpp's rotary layout, and the vocabulary is copied from an existing GGUF.
Every file is written under a temporary name in the target directory, then renamed, so a
reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import mmap
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
# Architectures whose HF RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w.
GEMMA_NORM_ARCHS = {"gemma", "gemma2", "gemma3"}
# Architectures llama.cpp's converter stores with q/k rows permuted (rotary layout).
PERMUTED_QK_ARCHS = {"llama"}
# write_model_gguf writes the hyperparameters of these only (each needs its own checks).
MODEL_ARCHS = {"gemma3", "llama"}
MODEL_TYPES = {"gemma3_text", "gemma3", "llama"}  # e.g. mistral's sliding window is not written
# HF's default local rope theta for gemma3 (also llama.cpp's default when the key is absent).
GEMMA3_SWA_ROPE_THETA = 10000.0

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


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; others (e.g. a host user of a Docker volume) must read it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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

    with _atomic_target(path) as tmp:
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


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value types
_STRING, _ARRAY = 8, 9


class _RawValue(bytes):
    """A GGUF metadata value kept as its encoded bytes, so it is copied bit for bit."""


def _skip_value(buf, off: int, vtype: int) -> int:
    if vtype in _SCALAR_SIZES:
        return off + _SCALAR_SIZES[vtype]
    if vtype == _STRING:
        return off + 8 + struct.unpack_from("<Q", buf, off)[0]
    if vtype == _ARRAY:
        etype, count = struct.unpack_from("<IQ", buf, off)
        off += 12
        if etype in _SCALAR_SIZES:
            return off + count * _SCALAR_SIZES[etype]
        for _ in range(count):
            off = _skip_value(buf, off, etype)
        return off
    raise ExportError(f"export: unknown GGUF value type {vtype}")


@functools.lru_cache(maxsize=4)
def _read_tokenizer_kv(path: str, _stamp: tuple[int, int]) -> tuple[tuple[str, int, _RawValue], ...]:
    """The tokenizer.* metadata of a GGUF as raw values.

    gguf.GGUFReader builds numpy views for every token (about 20 s for a 262k vocabulary);
    this walks the header once and keeps bytes (well under a second).
    """
    out = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ExportError(f"export: {path} is not a GGUF file (bad magic bytes)")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ExportError(f"export: {path} is GGUF v{version}; re-convert it with a current llama.cpp")
        off = 24
        for _ in range(n_kv):
            (klen,) = struct.unpack_from("<Q", buf, off)
            key = bytes(buf[off + 8 : off + 8 + klen]).decode("utf-8")
            off += 8 + klen
            (vtype,) = struct.unpack_from("<I", buf, off)
            off += 4
            end = _skip_value(buf, off, vtype)
            if key.startswith("tokenizer."):
                out.append((key, vtype, _RawValue(buf[off:end])))
            off = end
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _raw_writer_class():
    """A GGUFWriter that writes _RawValue metadata verbatim (gguf is imported lazily)."""
    gguf = _gguf()

    class RawWriter(gguf.GGUFWriter):
        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if isinstance(val, _RawValue):
                return (self._pack("I", int(vtype)) if add_vtype else b"") + bytes(val)
            return super()._pack_val(val, vtype, add_vtype, sub_type=sub_type)

    return RawWriter


def _copy_tokenizer_kv(writer, tokenizer_gguf: Path) -> int:
    """Copy every tokenizer.* key from an existing GGUF; return its vocabulary size."""
    gguf = _gguf()
    st = tokenizer_gguf.stat()
    n_vocab = 0
    for key, vtype, raw in _read_tokenizer_kv(str(tokenizer_gguf.resolve()), (st.st_size, st.st_mtime_ns)):
        writer.add_key_value(key, raw, gguf.GGUFValueType(vtype))
        if key == gguf.Keys.Tokenizer.LIST:
            n_vocab = struct.unpack_from("<Q", raw, 4)[0]
    if not n_vocab:
        raise ExportError(f"export: {tokenizer_gguf} has no tokenizer.ggml.tokens; pass a GGUF with a vocabulary")
    return n_vocab


def _rope(config: Any, kind: str | None = None) -> dict:
    params = getattr(config, "rope_parameters", None) or {}
    if kind is not None and kind in params:
        params = params[kind]
    params = dict(params)
    if "rope_theta" not in params and getattr(config, "rope_theta", None) is not None:
        params["rope_theta"] = config.rope_theta
    return params


def _add_rope_scaling(writer, rope: dict, field: str) -> None:
    gguf = _gguf()
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type == "default":
        return
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        return
    raise ExportError(f"export: {field} rope_type={rope_type!r} is not supported by write_model_gguf (default/linear only)")


def _check_gemma3(config: Any) -> None:
    """Refuse configs llama.cpp's gemma3 graph would compute differently."""
    kinds = set(config.layer_types)
    if not kinds <= {"sliding_attention", "full_attention"} or len(config.layer_types) != config.num_hidden_layers:
        raise ExportError(
            f"export: gemma3 layer_types {config.layer_types} must list sliding_attention/full_attention per layer"
        )
    if "sliding_attention" in kinds and not config.sliding_window:
        raise ExportError("export: gemma3 has sliding_attention layers but no sliding_window; set sliding_window")
    local = _rope(config, "sliding_attention")
    if local.get("rope_type", "default") != "default":
        raise ExportError(f"export: gemma3 sliding-attention rope {local} is not supported (default rope only)")
    head_dim = int(config.head_dim)
    want = (config.hidden_size // config.num_attention_heads) if config.num_hidden_layers == 62 else head_dim
    if float(config.query_pre_attn_scalar) != float(want):
        raise ExportError(
            f"export: gemma3 query_pre_attn_scalar={config.query_pre_attn_scalar} but llama.cpp uses {want} "
            "for this size; set query_pre_attn_scalar to match"
        )
    if config.attn_logit_softcapping:
        raise ExportError("export: gemma3 attn_logit_softcapping is not computed by llama.cpp; set it to None")
    if getattr(config, "use_bidirectional_attention", False):
        raise ExportError("export: gemma3 use_bidirectional_attention=True is not a causal LM llama.cpp can run")
    if config.hidden_activation != "gelu_pytorch_tanh":
        raise ExportError(f"export: gemma3 hidden_activation={config.hidden_activation!r}; llama.cpp uses gelu (tanh)")


def _add_hparams(writer, config: Any, arch: str) -> None:
    n_head = int(config.num_attention_heads)
    n_head_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_head)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    if arch == "gemma3":
        _check_gemma3(config)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        if config.sliding_window:
            writer.add_sliding_window(int(config.sliding_window))
        # Per-layer pattern and local theta: llama.cpp (0.3.36) reads both instead of its
        # gemma3 defaults (every 6th layer global, theta 10000); checked by the tests.
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in config.layer_types])
        local = _rope(config, "sliding_attention")
        writer.add_rope_freq_base_swa(float(local.get("rope_theta", GEMMA3_SWA_ROPE_THETA)))
        full = _rope(config, "full_attention")
        writer.add_rope_freq_base(float(full["rope_theta"]))
        _add_rope_scaling(writer, full, "rope_parameters.full_attention")
        if config.final_logit_softcapping:
            writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    elif arch == "llama":
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ExportError(f"export: llama hidden_act={config.hidden_act!r}; llama.cpp uses silu")
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ExportError("export: llama attention_bias/mlp_bias are not written by write_model_gguf")
        rope = _rope(config)
        writer.add_rope_freq_base(float(rope["rope_theta"]))
        _add_rope_scaling(writer, rope, "rope_parameters")
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
    else:
        raise ExportError(f"export: write_model_gguf supports {sorted(MODEL_ARCHS)}, not {arch!r}")


def _model_tensors(model, arch: str, ftype: str) -> Iterator[tuple[str, np.ndarray]]:
    """(gguf name, array) for every weight, converted the way llama.cpp's converter does."""
    gguf = _gguf()
    config = model.config
    name_map = gguf.get_tensor_name_map(_model_arch_enum(arch), int(config.num_hidden_layers))
    n_head = int(config.num_attention_heads)
    n_head_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        stem, _, suffix = hf_name.rpartition(".")
        gguf_name = name_map.get_name(stem)
        if gguf_name is None or suffix != "weight":
            raise ExportError(f"export: no llama.cpp tensor for {hf_name}; write_model_gguf cannot store it")
        w = _numpy(tensor)
        if arch in GEMMA_NORM_ARCHS and stem.endswith("norm"):
            w = w + np.float32(1.0)
        if arch in PERMUTED_QK_ARCHS and gguf_name.endswith((".attn_q", ".attn_k")):
            w = _permute_rows(w, n_head if gguf_name.endswith(".attn_q") else n_head_kv)
        if ftype == "f16" and w.ndim >= 2:
            w = w.astype(np.float16)
        yield f"{gguf_name}.weight", np.ascontiguousarray(w)


def _has_lora(model) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def write_model_gguf(model, path: Path, tokenizer_gguf: Path, ftype: str = "f32") -> Path:
    """Write a full HF causal LM (gemma3 text or llama) as a GGUF llama.cpp loads.

    The vocabulary and tokenizer metadata come from `tokenizer_gguf` because minisir never
    needs an HF tokenizer: sampler and trainer share llama.cpp's token ids.
    """
    gguf = _gguf()
    path, tokenizer_gguf = Path(path), Path(tokenizer_gguf)
    if ftype not in ("f32", "f16"):
        raise ExportError(f"export: ftype={ftype!r}; use 'f32' or 'f16' (quantize with quantize_gguf)")
    if _has_lora(model):
        raise ExportError("export: write_model_gguf got a model with LoRA layers; use export_merged to merge them first")
    config = model.config
    arch = gguf_architecture(config)
    if arch not in MODEL_ARCHS or config.model_type not in MODEL_TYPES:
        raise ExportError(f"export: write_model_gguf supports {sorted(MODEL_ARCHS)}, not {arch!r}")
    with _atomic_target(path) as tmp:
        writer = _raw_writer_class()(tmp, arch)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(str(getattr(config, "_name_or_path", "") or f"minisir {arch}"))
        _add_hparams(writer, config, arch)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if ftype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        n_vocab = _copy_tokenizer_kv(writer, tokenizer_gguf)
        if int(config.vocab_size) != n_vocab:
            raise ExportError(
                f"export: model vocab_size={config.vocab_size} but {tokenizer_gguf.name} has {n_vocab} tokens; "
                "pass the GGUF whose tokenizer the model was trained with"
            )
        for name, array in _model_tensors(model, arch, ftype):
            writer.add_tensor(name, array)
        _write(writer)
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
    with _atomic_target(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"export: llama.cpp failed to quantize {src} to {qtype} (code {rc}); see its log")
    log.info("quantized %s -> %s (%s)", src, dst, qtype)
    return dst


def export_merged(model, out: Path, tokenizer_gguf: Path, qtype: str = "f16") -> Path:
    """Merge a PEFT LoRA into (a copy of) its base and write a standalone GGUF.

    The caller's model is left untouched: merging in place and unmerging would leave
    rounding error in the weights still being trained.
    """
    out = Path(out)
    qtype = qtype.lower()
    if qtype not in ("f32", "f16"):
        _llama_ftype(qtype)  # reject unknown types before any work
    if _has_lora(model):
        model = copy.deepcopy(model).merge_and_unload()
    if qtype in ("f32", "f16"):
        return write_model_gguf(model, out, tokenizer_gguf, ftype=qtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".minisir-export-") as tmpdir:
        full = write_model_gguf(model, Path(tmpdir) / "model-f32.gguf", tokenizer_gguf, ftype="f32")
        del model
        return quantize_gguf(full, out, qtype)
