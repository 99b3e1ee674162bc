"""Read a GGUF's metadata and tensor directory without loading its tensors or vocabulary.

gguf.GGUFReader builds numpy views of every field (about 20 s for a 262k-token vocabulary);
minisir only needs a few hyperparameters and, at most, one small tensor (llama's rope_freqs),
so this walks the header once and skips the large string arrays.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelNotFound

# GGUF value type -> struct format (scalars)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
_GGML_F32 = 0


@dataclass
class TensorInfo:
    shape: tuple[int, ...]  # GGUF order (fastest-varying dimension first)
    ggml_type: int
    offset: int  # absolute, in bytes from the start of the file


@dataclass
class GGUFInfo:
    path: Path
    kv: dict[str, Any] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)  # element count of every array, kept or skipped
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return str(self.kv.get("general.architecture", ""))

    def arch_key(self, name: str, default: Any = None) -> Any:
        """`{arch}.{name}`, e.g. arch_key("attention.key_length")."""
        return self.kv.get(f"{self.arch}.{name}", default)

    def tensor_f32(self, name: str) -> np.ndarray:
        """A float32 tensor's values (flattened); only small tensors are ever read this way."""
        info = self.tensors[name]
        if info.ggml_type != _GGML_F32:
            raise ModelNotFound(f"{self.path}: tensor {name} is not float32 (ggml type {info.ggml_type})")
        count = int(np.prod(info.shape))
        with open(self.path, "rb") as fh:
            fh.seek(info.offset)
            return np.frombuffer(fh.read(4 * count), dtype="<f4").copy()


def _string(buf, off: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, off)
    return bytes(buf[off + 8 : off + 8 + n]).decode("utf-8", errors="replace"), off + 8 + n


def _value(buf, off: int, vtype: int, keep: bool) -> tuple[Any, int]:
    """(value or None when not kept, offset after it)."""
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, buf, off)[0], off + struct.calcsize(fmt)
    if vtype == _STRING:
        text, end = _string(buf, off)
        return (text if keep else None), end
    if vtype == _ARRAY:
        etype, count = struct.unpack_from("<IQ", buf, off)
        off += 12
        if etype in _NUMPY:
            size = np.dtype(_NUMPY[etype]).itemsize * count
            value = np.frombuffer(buf, dtype=_NUMPY[etype], count=count, offset=off).tolist() if keep else None
            return value, off + size
        items = []
        for _ in range(count):
            item, off = _value(buf, off, etype, keep)
            items.append(item)
        return (items if keep else None), off
    raise ModelNotFound(f"GGUF: unknown value type {vtype}")


@contextmanager
def _header(path: Path) -> Iterator[tuple[mmap.mmap, int, int]]:
    """The mapped file, its tensor count and key count; any read error becomes one ModelNotFound."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise ModelNotFound(f"{path} is not a GGUF file (bad magic bytes)")
            version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
            if version < 2:
                raise ModelNotFound(f"{path} is GGUF v{version}; re-convert it with a current llama.cpp")
            yield buf, n_tensors, n_kv
    except (OSError, struct.error, ValueError) as exc:
        raise ModelNotFound(f"{path}: cannot read it as GGUF ({exc})") from None


def read_gguf_info(path: Path | str, skip: tuple[str, ...] = ("tokenizer.",)) -> GGUFInfo:
    """Metadata (keys starting with a `skip` prefix are left out) and the tensor directory."""
    path = Path(path)
    info = GGUFInfo(path)
    with _header(path) as (buf, n_tensors, n_kv):
        off = 24
        for _ in range(n_kv):
            key, off = _string(buf, off)
            (vtype,) = struct.unpack_from("<I", buf, off)
            if vtype == _ARRAY:
                info.lengths[key] = struct.unpack_from("<Q", buf, off + 8)[0]
            value, off = _value(buf, off + 4, vtype, keep=not key.startswith(skip))
            if not key.startswith(skip):
                info.kv[key] = value
        entries = []
        for _ in range(n_tensors):
            name, off = _string(buf, off)
            (n_dims,) = struct.unpack_from("<I", buf, off)
            shape = struct.unpack_from(f"<{n_dims}Q", buf, off + 4)
            off += 4 + 8 * n_dims
            ggml_type, rel = struct.unpack_from("<IQ", buf, off)
            off += 12
            entries.append((name, tuple(shape), ggml_type, rel))
        align = int(info.kv.get("general.alignment", 32))
        data_start = (off + align - 1) // align * align
    for name, shape, ggml_type, rel in entries:
        info.tensors[name] = TensorInfo(shape, ggml_type, data_start + rel)
    return info


class RawValue(bytes):
    """A GGUF metadata value kept as its encoded bytes, so a writer can copy it bit for bit."""


def read_raw_kv(path: Path | str, prefix: str = "tokenizer.") -> tuple[tuple[str, int, RawValue], ...]:
    """(key, GGUF value type, encoded value) of every metadata key starting with `prefix`.

    Why raw: the tokenizer arrays of a 262k vocabulary are copied into exports and read for
    a Modelfile; decoding them into Python lists only to encode them again costs seconds.
    """
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise ModelNotFound(f"{path}: cannot read it as GGUF ({exc.strerror or exc})") from None
    return _read_raw_kv(str(Path(path).resolve()), prefix, (st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _read_raw_kv(path: str, prefix: str, _stamp: tuple[int, int]) -> tuple[tuple[str, int, RawValue], ...]:
    out = []
    with _header(Path(path)) as (buf, _n_tensors, n_kv):
        off = 24
        for _ in range(n_kv):
            key, off = _string(buf, off)
            (vtype,) = struct.unpack_from("<I", buf, off)
            _, end = _value(buf, off + 4, vtype, keep=False)
            if key.startswith(prefix):
                out.append((key, vtype, RawValue(buf[off + 4 : end])))
            off = end
    return tuple(out)
