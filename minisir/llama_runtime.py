"""llama.cpp as minisir loads it: the lazy import, quiet logs, AMX-safe model parameters, and
a GGUF's vocabulary (text <-> token ids), shared by the in-process and the server-backed samplers."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from .errors import MinisirError, ModelNotFound


def _llama():
    """Import llama_cpp lazily so that `minisir --help` works without it."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MinisirError(
            "llama-cpp-python is not installed: run the README's set-up command "
            "(`pip install llama-cpp-python==0.3.36`)"
        ) from exc
    return llama_cpp


_LOG_CALLBACK = None  # kept alive: llama.cpp calls it for the process lifetime
_LEVEL_NAMES = {3: logging.INFO, 4: logging.ERROR}  # ggml_log_level: 3 warn (mostly noise), 4 error


def quiet_llama_logs() -> None:
    """Route llama.cpp's chatter to Python logging: errors and warnings only."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    ll = _llama()
    llama_log = logging.getLogger("llama.cpp")

    def forward(level: int, text: bytes, _user) -> None:
        if level in _LEVEL_NAMES:
            llama_log.log(_LEVEL_NAMES[level], text.decode("utf-8", errors="replace").rstrip())

    _LOG_CALLBACK = ll.llama_log_callback(forward)
    ll.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def amx_workaround_needed() -> bool:
    """True when llama.cpp's extra (AMX) buffer types may run and crash with SIGILL.

    The AMX kernels crash on these machines' CPUs; they are only used when the build
    has them or the CPU advertises AMX. MINISIR_EXTRA_BUFTS=0/1 overrides the guess.
    """
    forced = os.environ.get("MINISIR_EXTRA_BUFTS")
    if forced in ("0", "1"):
        return forced == "0"
    info = _llama().llama_print_system_info().decode(errors="replace")
    if "AMX" in info:
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any(line.startswith("flags") and " amx" in line for line in fh)
    except OSError:
        return False


def model_params(n_gpu_layers: int = -1, gpu: int | None = None):
    """llama_model_params with AMX-safe buffers and full GPU offload when available.

    gpu=None spreads layers over every visible GPU (llama.cpp's default); gpu=k keeps the
    whole model on GPU k, as each data-parallel rank does with its own GPU.
    """
    ll = _llama()
    params = ll.llama_model_default_params()
    params.n_gpu_layers = (10_000 if n_gpu_layers < 0 else n_gpu_layers) if ll.llama_supports_gpu_offload() else 0
    if gpu is not None and ll.llama_supports_gpu_offload():
        params.split_mode = ll.LLAMA_SPLIT_MODE_NONE
        params.main_gpu = int(gpu)
    if amx_workaround_needed():
        params.use_extra_bufts = False
    return params


class amx_safe_defaults:
    """Context manager making the high-level `llama_cpp.Llama` load AMX-safe as well."""

    def __enter__(self):
        import llama_cpp.llama as high

        self._module = high.llama_cpp
        self._orig = self._module.llama_model_default_params
        orig = self._orig
        safe = amx_workaround_needed()

        def patched():
            params = orig()
            if safe:
                params.use_extra_bufts = False
            return params

        self._module.llama_model_default_params = patched
        return self

    def __exit__(self, *exc):
        self._module.llama_model_default_params = self._orig


class Vocabulary:
    """A GGUF's tokenizer and metadata in llama.cpp: text <-> the token ids the trainer learns on.

    Alone (vocab_only) it is what a server-backed sampler needs locally; `Sampler` adds the
    weights, a context and batched decoding on top.
    """

    def __init__(self, model_path: str | os.PathLike, params=None) -> None:
        ll = _llama()
        self._ll = ll
        path = Path(model_path)
        if not path.is_file():
            raise ModelNotFound(f"model file {path} does not exist; pass an existing GGUF file")
        quiet_llama_logs()
        ll.llama_backend_init()
        self.model_path = path
        if params is None:  # tokenizer and metadata only: no weights are read
            params = ll.llama_model_default_params()
            params.vocab_only = True
            params.n_gpu_layers = 0
        self._model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ModelNotFound(f"llama.cpp could not load {path}; is it a complete GGUF file?")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = ll.llama_model_n_ctx_train(self._model)
        self.chat_template = self._meta_chat_template()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free llama.cpp memory; the object is unusable afterwards."""
        if getattr(self, "_model", None):
            self._ll.llama_model_free(self._model)
            self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # ----------------------------------------------------------------- metadata
    def _meta_chat_template(self) -> str | None:
        raw = self._ll.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (None when absent)."""
        buf = ctypes.create_string_buffer(4096)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    # ----------------------------------------------------------------- tokens
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids exactly as llama.cpp will evaluate them (special tokens parsed)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_bos, True)
        if n < 0:
            cap = -n
            buf = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_bos, True)
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def detokenize(self, ids: Iterable[int]) -> str:
        """Text of `ids` (special tokens rendered as nothing)."""
        return b"".join(self._piece(t) for t in ids).decode("utf-8", errors="replace")

    def char_offsets(self, ids: Sequence[int]) -> list[int]:
        """Character offset in the decoded text where each token's text starts.

        Lets callers turn a character span of a completion (e.g. a tag block) into a
        token mask over the exact ids the sampler produced.
        """
        raw = bytearray()
        out = []
        for tok in ids:
            out.append(len(raw.decode("utf-8", errors="ignore")))
            if not self.is_eog(tok):
                raw += self._piece(tok)
        return out

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, token))
