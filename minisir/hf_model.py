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
import os
import shutil
import time
from pathlib import Path

import torch

from . import assets
from .errors import ModelNotFound

log = logging.getLogger(__name__)

# Bump when the conversion itself changes, so stale caches are not reused.
_CACHE_FORMAT = 1


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


def _convert_gguf(gguf_path: Path, target: Path):
    """Dequantize the GGUF with transformers and write it atomically to `target` (float32)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        from transformers import GgufConfig

        # dequantize=True: plain dense weights (trainable, serialisable) even where `kernels` could keep
        # them packed. float32 keeps the dequantized Q4_K/Q6_K values exact; the caller casts afterwards.
        model = _from_pretrained(
            gguf_path.parent, torch.float32, gguf_file=gguf_path.name,
            quantization_config=GgufConfig(dequantize=True),
        )
        _drop_quantizer(model)
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
