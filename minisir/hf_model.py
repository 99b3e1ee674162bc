"""Load the trainable PyTorch model from the same GGUF the sampler uses.

Training on the dequantized GGUF keeps the trainer's numerics close to llama.cpp's.
transformers dequantizes a GGUF in ~45 s, so the result is converted once and cached as a
safetensors checkpoint under ``assets.cache_dir()/hf/<key>``; later loads take seconds.
The tokenizer is never loaded: the trainer works on the sampler's token ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from . import assets
from .errors import ModelNotFound
from .gguf_info import GGUFInfo, read_gguf_info

log = logging.getLogger(__name__)

# Bump when the conversion itself changes, so stale caches are not reused.
# 2: the config is made to match what llama.cpp computes from the GGUF (_match_llama_cpp).
_CACHE_FORMAT = 2
# llama.cpp gives these Gemma sizes (by layer count) a query scale of n_embd / n_head, not head_dim.
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on GPU (memory, speed), float32 on CPU (bf16 matmuls are slow and lossy there)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _as_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        value = getattr(torch, str(dtype))
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype: unknown torch dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def cache_key(gguf_path: Path) -> str:
    """Key a converted checkpoint by file identity (path, size, mtime) and converter version.

    Hashing a multi-GB file on every start would cost seconds; size+mtime changes whenever the
    file is rewritten, which is what matters here.
    """
    import transformers

    st = gguf_path.stat()
    ident = f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}|{_CACHE_FORMAT}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return f"{gguf_path.stem}-{digest}"


def cached_checkpoint_dir(gguf_path: Path) -> Path:
    """Where the converted checkpoint for `gguf_path` lives (it may not exist yet)."""
    return assets.cache_dir() / "hf" / cache_key(Path(gguf_path))


def _is_complete(directory: Path) -> bool:
    has_weights = any(directory.glob("*.safetensors")) or (directory / "model.safetensors.index.json").is_file()
    return (directory / "config.json").is_file() and has_weights


def _from_pretrained(directory: Path, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, **kwargs)


def _drop_quantizer(model) -> None:
    """Forget the GGUF origin of a fully dequantized model so it saves and trains as a plain model."""
    packed = [n for n, m in model.named_modules() if "Gguf" in type(m).__name__]
    if packed:
        raise RuntimeError(f"{len(packed)} layers stayed GGUF-packed (e.g. {packed[0]})")
    model.hf_quantizer = None
    for cfg in {id(c): c for c in (model.config, model.config.get_text_config(decoder=True))}.values():
        if getattr(cfg, "quantization_config", None) is not None:
            del cfg.quantization_config


def _pattern_layer_types(info: GGUFInfo, n_layer: int, default: int) -> list[str]:
    """llama.cpp's sliding-window layers: an explicit per-layer array, or every n-th layer global."""
    pattern = info.arch_key("attention.sliding_window_pattern", default)
    if isinstance(pattern, list):
        swa = [bool(x) for x in pattern[:n_layer]]
    else:
        n = int(pattern)
        swa = [n == 0 or il % n < n - 1 for il in range(n_layer)]
    return ["sliding_attention" if s else "full_attention" for s in swa]


def _llama3_rope(factors: np.ndarray, theta: float, head_dim: int) -> dict | None:
    """Recover HF's llama3 rope parameters from llama.cpp's rope_freqs tensor.

    llama.cpp stores the per-frequency divisors the converter computed from them; the
    smooth band between the two wavelength limits is linear in 1/wavelength, so two of its
    points give both limits. Any original context length then reproduces the same divisors.
    """
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    x = inv / (2 * math.pi)  # 1 / wavelength
    f = factors.astype(np.float64)
    factor = float(f.max())
    if factor <= 1 + 1e-6:
        return None  # every divisor 1: plain rope
    s = (1 / f - 1 / factor) / (1 - 1 / factor)  # 1: unscaled (high frequency), 0: divided by factor
    mid = (s > 1e-4) & (s < 1 - 1e-4)
    high, low = s >= 1 - 1e-4, s <= 1e-4
    if mid.sum() >= 2:
        a, b = np.polyfit(x[mid], s[mid], 1)
        inv_low, inv_high = -b / a, (1 - b) / a  # 1/L and 1/H, L > H
    else:  # no smooth band to fit: put each limit between its neighbouring frequencies
        inv_low = math.sqrt(x[~low].min() * x[low].max()) if low.any() and (~low).any() else x.min() / 2
        inv_high = math.sqrt(x[high].min() * x[~high].max()) if high.any() and (~high).any() else x.max() * 2
        if mid.sum() == 1:
            inv_high = inv_low + (x[mid][0] - inv_low) / s[mid][0]
    old = float(round(1 / inv_low))
    return {"rope_type": "llama3", "rope_theta": float(theta), "factor": factor,
            "low_freq_factor": float(old * inv_low), "high_freq_factor": float(old * inv_high),
            "original_max_position_embeddings": int(old)}


def _match_llama_cpp(config, info: GGUFInfo):
    """Set what transformers' GGUF loader leaves at its defaults but llama.cpp reads from the file.

    transformers (5.x) maps only a few keys per architecture: it misses Gemma-2's soft-caps,
    Gemma's query scale, sliding-window layers and local rope theta, Qwen3's head_dim and
    Llama 3's rope_freqs, so its model would compute other numbers than the sampler. Each
    rule below is llama.cpp's (0.3.36) for the same file; returns a new config.
    """
    arch, d = info.arch, config.to_dict()
    changes: dict = {}
    n_layer, n_head = int(d["num_hidden_layers"]), int(d["num_attention_heads"])
    head_dim = info.arch_key("attention.key_length")
    if head_dim is not None and "head_dim" in d:
        changes["head_dim"] = int(head_dim)
    head_dim = int(changes.get("head_dim") or d.get("head_dim") or d["hidden_size"] // n_head)
    theta = float(info.arch_key("rope.freq_base", 10000.0))
    rope: dict = {"rope_type": "default", "rope_theta": theta}
    scaling = info.arch_key("rope.scaling.type", "none")
    if scaling == "linear":
        rope = {"rope_type": "linear", "rope_theta": theta, "factor": float(info.arch_key("rope.scaling.factor"))}
    elif scaling != "none":
        raise ModelNotFound(f"model.gguf: {info.path.name} uses {scaling} rope scaling, which minisir cannot "
                            "rebuild for transformers from a GGUF; set model.hf_dir to the HF checkpoint")
    if "rope_freqs.weight" in info.tensors:
        rope = _llama3_rope(info.tensor_f32("rope_freqs.weight"), theta, head_dim) or rope
    if arch in _GEMMA_27B_LAYERS:
        big = n_layer == _GEMMA_27B_LAYERS[arch]
        changes["query_pre_attn_scalar"] = d["hidden_size"] // n_head if big else head_dim
    if arch == "gemma2":
        changes["attn_logit_softcapping"] = float(info.arch_key("attn_logit_softcapping", 50.0))
        changes["final_logit_softcapping"] = float(info.arch_key("final_logit_softcapping", 30.0))
        changes["sliding_window"] = int(info.arch_key("attention.sliding_window", 4096))
        changes["layer_types"] = _pattern_layer_types(info, n_layer, 2)
        if float(info.arch_key("rope.freq_base_swa", theta)) != theta:
            raise ModelNotFound(f"model.gguf: {info.path.name} gives Gemma-2's local layers their own rope theta, "
                                "which transformers cannot compute; set model.hf_dir to the HF checkpoint")
    elif arch == "gemma3":
        window = int(info.arch_key("attention.sliding_window", 0) or 0)
        changes["final_logit_softcapping"] = info.arch_key("final_logit_softcapping") or None
        if window > 0:
            changes["sliding_window"] = window
            changes["layer_types"] = _pattern_layer_types(info, n_layer, 6)
        else:
            changes["layer_types"] = ["full_attention"] * n_layer
        local = float(info.arch_key("rope.freq_base_swa", 10000.0))
        changes["rope_parameters"] = {"full_attention": rope,
                                      "sliding_attention": {"rope_type": "default", "rope_theta": local}}
    if arch != "gemma3" and rope["rope_type"] != "default":  # the default is transformers' own reading
        changes["rope_parameters"] = rope
    changed = {k: v for k, v in changes.items() if d.get(k) != v}
    if changed:
        log.info("%s: config set to llama.cpp's reading of the GGUF: %s", info.path.name, changed)
    return type(config).from_dict({**d, **changes})


def _check_rope(model, info: GGUFInfo) -> None:
    """The rope recovered from rope_freqs must give llama.cpp's frequencies (theta^(-2i/d) / rope_freqs)."""
    if "rope_freqs.weight" not in info.tensors:
        return
    rotary = next((m for n, m in model.named_modules() if n.endswith("rotary_emb") and hasattr(m, "inv_freq")), None)
    if rotary is None:
        raise ModelNotFound(f"model.gguf: {info.path.name} has rope_freqs but its {type(model).__name__} has no "
                            "rotary embedding to apply them to; set model.hf_dir to the HF checkpoint")
    got = rotary.inv_freq.detach().double().cpu().numpy()
    theta = float(info.arch_key("rope.freq_base", 10000.0))
    d = 2 * len(got)
    want = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d) / info.tensor_f32("rope_freqs.weight")
    err = float(np.abs(got / want - 1).max()) if want.shape == got.shape else float("inf")
    if err > 1e-3:
        raise ModelNotFound(f"model.gguf: {info.path.name}'s rope_freqs are not a llama3 rope transformers can "
                            f"reproduce (relative error {err:.1e}); set model.hf_dir to the HF checkpoint")


def _convert_gguf(gguf_path: Path, target: Path):
    """Dequantize the GGUF with transformers and write it atomically to `target` (float32)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        from transformers import AutoConfig, GgufConfig

        info = read_gguf_info(gguf_path)
        config = _match_llama_cpp(AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name), info)
        # dequantize=True: plain dense weights (trainable, serialisable) even where `kernels` could keep
        # them packed. float32 keeps the dequantized Q4_K/Q6_K values exact; the caller casts afterwards.
        model = _from_pretrained(
            gguf_path.parent, torch.float32, gguf_file=gguf_path.name, config=config,
            quantization_config=GgufConfig(dequantize=True),
        )
        _drop_quantizer(model)
        _check_rope(model, info)
    except ModelNotFound:
        raise
    except Exception as exc:  # transformers raises many types for unsupported/corrupt GGUFs
        raise ModelNotFound(
            f"model.gguf: transformers could not load {gguf_path} ({type(exc).__name__}: {exc}); "
            "pass model.hf_dir with an HF checkpoint of the same model"
        ) from exc
    log.info("dequantized %s in %.1f s; caching to %s", gguf_path.name, time.perf_counter() - t0, target)
    try:
        model.save_pretrained(str(tmp))
        (tmp / "minisir_source.json").write_text(
            json.dumps({"gguf": str(gguf_path.resolve()), "size": gguf_path.stat().st_size,
                        "format": _CACHE_FORMAT}, indent=1)
        )
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # not a lost race with another process: a real failure
                raise
            log.info("another process cached %s first; using its copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model


def load_hf_model(
    gguf_path: Path | str | None,
    hf_dir: Path | str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
):
    """Return a causal-LM ``PreTrainedModel`` in eval mode on `device`.

    `hf_dir` (an HF checkpoint directory) wins when given; otherwise the GGUF is dequantized
    once and cached. Defaults: CUDA + bf16 when available, else CPU + float32.
    """
    device = torch.device(device) if device is not None else default_device()
    torch_dtype = _as_dtype(dtype, device)
    t0 = time.perf_counter()
    if hf_dir is not None:
        source = assets.resolve_hf_dir(hf_dir)
        model = _from_pretrained(source, torch_dtype)
    else:
        gguf = assets.resolve_gguf(gguf_path)
        target = cached_checkpoint_dir(gguf)
        if _is_complete(target):
            source = target
            model = _from_pretrained(target, torch_dtype)
        else:
            source = gguf
            model = _convert_gguf(gguf, target).to(torch_dtype)
    model.to(device)
    model.eval()
    log.info("loaded %s (%s, %s) in %.1f s", source, torch_dtype, device, time.perf_counter() - t0)
    return model
