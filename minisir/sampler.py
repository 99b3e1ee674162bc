"""Batched llama.cpp sampler: the hot path for every teacher and student generation.

All sequences of one `generate` call advance together through one `llama_batch`.
The prompts' common prefix (a few-shot prompt's examples) is evaluated once per call into
a sequence of its own, whose cells every prompt then shares (llama.cpp's sequence copy, as
vLLM's prefix cache does); each prompt's own rest is evaluated once for the group of
sequences admitted with it (its tokens carry all their sequence ids, so the KV cells are
shared). Finished sequences free their slot for waiting ones, and sampling happens in
numpy so every completion gets the log-probability of each sampled token under the
distribution it was drawn from (logits / T).

Each completion draws from its own random stream keyed by (seed, prompt, sample), so the
draws do not depend on how sequences were scheduled or on `n_parallel`. The logits do,
slightly: llama.cpp's CPU kernels differ with the number of sequences in a decode (up to
~0.1 nat/token measured on the bundled Q4_K_M between 1 and 4), so at T > 0 the same seed
gives the same first token and usually the same opening, not always the same text.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import ContextOverflow, MinisirError, ModelNotFound

log = logging.getLogger(__name__)

# Bumped when sampled numbers change (log-probs at T, the shared prefix's batch shapes): cached
# evaluations made by an older sampler are not reused next to new ones.
SAMPLER_VERSION = 2
_NUCLEUS_FLOORS = (1e-3, 1e-6)  # nucleus candidates: tokens at least this share of the top one's probability


@dataclass
class Completion:
    """One sampled continuation, with what the trainer needs to learn from it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOG token or stop string) | "length"
    prompt_ids: list[int] = field(repr=False, default_factory=list)
    rank: int | None = None  # the data-parallel rank that sampled it (None: a one-process run)
    # The temperature `logprobs` are taken at (logits / T, the distribution it was drawn from);
    # the trainer scores the same tokens at the same T. Greedy draws are kept at 1.
    temperature: float = 1.0


@dataclass
class _Slot:
    """A live sequence: which job it serves and what it has produced so far."""

    seq_id: int
    prompt: int
    sample: int
    group: int  # admission group: the sequences that share one evaluation of the prompt
    rng: np.random.Generator
    pos: int
    budget: int
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)  # len(raw) after each non-EOG token
    done: str | None = None


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


class Sampler(Vocabulary):
    """One GGUF model in llama.cpp, sampled in parallel sequences, with LoRA hot-swap."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_parallel: int = 16,
        n_gpu_layers: int = -1,
        n_batch: int = 512,
        gpu: int | None = None,
    ) -> None:
        if not Path(model_path).is_file():  # before model_params, which needs llama.cpp's backend
            raise ModelNotFound(f"model file {model_path} does not exist; pass an existing GGUF file")
        quiet_llama_logs()
        _llama().llama_backend_init()
        super().__init__(model_path, model_params(n_gpu_layers, gpu))
        ll = self._ll
        path = self.model_path
        self.n_parallel = max(1, int(n_parallel))
        self.n_batch = max(int(n_batch), self.n_parallel)
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.amx_workaround = amx_workaround_needed()
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = int(n_ctx)
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.n_parallel + 1  # the last sequence id holds a shared prompt prefix
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.kv_unified = True  # prompt cells are shared by all sequences of a group
        cparams.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            self._model = None
            raise MinisirError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {path}; "
                "lower sampler.n_ctx or sampler.n_parallel"
            )
        self.n_ctx = ll.llama_n_ctx(self._ctx)
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(self.n_batch, 0, self.n_parallel + 1)
        self._prefix_seq = self.n_parallel
        self.prompt_tokens_evaluated = 0  # prompt tokens decoded so far (the shared prefix counts once)
        self.tokens_generated = 0  # completion tokens sampled so far (a run reports the share it trained)
        # Seconds spent so far: llama_decode of prompts and of generation steps, and numpy sampling
        # (softmax, nucleus, draws over the vocabulary): where generate's time goes (bench sampler).
        self.timings = {"prompt_s": 0.0, "decode_s": 0.0, "sample_s": 0.0}
        # Generation decode calls and the sequences they carried: rows / (calls * n_parallel) is how
        # full the batch ran, which a throughput below bench sampler's batched rate comes down to.
        self.decode_calls = 0
        self.decode_rows = 0
        self._adapter = None
        self.adapter_path: Path | None = None
        self.adapter_scale = 0.0

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free llama.cpp memory; the sampler is unusable afterwards."""
        ll = self._ll
        if getattr(self, "_ctx", None):
            ll.llama_batch_free(self._batch)
            ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_adapter", None):
            ll.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        super().close()

    def __enter__(self) -> "Sampler":
        return self

    # ----------------------------------------------------------------- adapters
    def set_adapter(self, path: str | os.PathLike, scale: float = 1.0) -> None:
        """Load a GGUF LoRA adapter and make it the only active one; frees the old one."""
        ll = self._ll
        path = Path(path)
        if not path.is_file():
            raise ModelNotFound(f"adapter {path} does not exist")
        adapter = ll.llama_adapter_lora_init(self._model, str(path).encode())
        if not adapter:
            raise MinisirError(
                f"llama.cpp refused adapter {path}: it must be a GGUF LoRA for this model's architecture"
            )
        arr = (ll.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(float(scale))
        if ll.llama_set_adapters_lora(self._ctx, arr, 1, scales) != 0:
            ll.llama_adapter_lora_free(adapter)
            raise MinisirError(f"llama.cpp could not activate adapter {path}")
        old, self._adapter = self._adapter, adapter
        if old:
            ll.llama_adapter_lora_free(old)
        self.adapter_path, self.adapter_scale = path, float(scale)
        ll.llama_memory_clear(self._mem, True)

    def clear_adapter(self) -> None:
        """Back to the base model; the KV cache is cleared so nothing stale is reused."""
        ll = self._ll
        ll.llama_set_adapters_lora(self._ctx, None, 0, None)
        if self._adapter:
            ll.llama_adapter_lora_free(self._adapter)
        self._adapter, self.adapter_path, self.adapter_scale = None, None, 0.0
        ll.llama_memory_clear(self._mem, True)

    # ----------------------------------------------------------------- decoding
    def _decode(self, tokens: Sequence[tuple[int, int, Sequence[int], bool]]) -> None:
        """Decode one batch of (token, pos, seq_ids, want_logits) entries."""
        b = self._batch
        for i, (tok, pos, seqs, want) in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = len(seqs)
            for k, s in enumerate(seqs):
                b.seq_id[i][k] = s
            b.logits[i] = want
        b.n_tokens = len(tokens)
        rc = self._ll.llama_decode(self._ctx, b)
        if rc != 0:
            self._ll.llama_memory_clear(self._mem, True)
            raise MinisirError(
                f"llama_decode failed with code {rc} (KV cache full?): raise sampler.n_ctx "
                f"(now {self.n_ctx}) or lower sampler.n_parallel (now {self.n_parallel})"
            )

    def _logits(self, n_rows: int) -> np.ndarray:
        """The last decode's output rows as an (n_rows, vocab) float32 view."""
        ptr = self._ll.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_rows, self.n_vocab))

    def _eval_prompt(self, ids: list[int], seqs: list[int], cached: int = 0) -> np.ndarray:
        """Evaluate a prompt once for all `seqs`; returns a copy of its last logits row.

        cached: the first `cached` tokens are the shared prefix already in the prefix
        sequence's cells (_eval_prefix); `seqs` share those cells instead of recomputing them.
        """
        for s in seqs if cached else ():
            self._ll.llama_memory_seq_cp(self._mem, self._prefix_seq, s, 0, cached)
        for start in range(cached, len(ids), self.n_batch):
            chunk = ids[start : start + self.n_batch]
            last = start + len(chunk) == len(ids)
            self._timed_decode(
                "prompt_s", [(t, start + i, seqs, last and i == len(chunk) - 1) for i, t in enumerate(chunk)]
            )
        self.prompt_tokens_evaluated += len(ids) - cached
        return self._logits(1)[0].copy()

    def _timed_decode(self, key: str, tokens: Sequence[tuple[int, int, Sequence[int], bool]]) -> None:
        t0 = time.perf_counter()
        self._decode(tokens)
        self.timings[key] += time.perf_counter() - t0

    def _eval_prefix(self, ids: list[int]) -> None:
        """Evaluate the prompts' common prefix once, into the prefix sequence's cells."""
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start : start + self.n_batch]
            self._timed_decode("prompt_s", [(t, start + i, (self._prefix_seq,), False) for i, t in enumerate(chunk)])
        self.prompt_tokens_evaluated += len(ids)

    def check_fits(self, n_prompt: int, max_tokens: int) -> None:
        """Raise ContextOverflow when one sequence cannot fit the context."""
        if n_prompt + max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"prompt of {n_prompt} tokens + max_tokens {max_tokens} exceeds the sampler context "
                f"of {self.n_ctx} tokens: raise sampler.n_ctx or shorten the prompt"
            )

    def generate(
        self,
        prompts: Sequence[str],
        n: int | Sequence[int] = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        progress=None,
        streams: Sequence[tuple[int, int]] | None = None,
    ) -> list[list[Completion]]:
        """Sample `n` completions for each prompt (or n[i] for prompt i); returns them grouped by prompt.

        Sample j of prompt i draws from the stream (seed, i, j). `streams[i] = (key, first)`
        makes it (seed, key, first + j) instead: a data-parallel rank that samples part of a
        step's work then draws exactly what one process sampling all of it would.
        `progress`, when given, is called with the number of tokens produced each step.
        """
        counts, keys = sample_plan(len(prompts), n, max_tokens, streams)
        ids = [self.tokenize(p) for p in prompts]
        for p in ids:
            self.check_fits(len(p), max_tokens)
        results: list[list[Completion | None]] = [[None] * k for k in counts]
        pending = deque(enumerate(counts))  # (prompt, samples still to start)
        next_sample = [0] * len(prompts)
        free = list(range(self.n_parallel))[::-1]
        live: dict[int, _Slot] = {}
        held: dict[int, int] = {}  # admission group -> live sequences still sharing its prompt cells
        stops = [s for s in stop if s]
        self._ll.llama_memory_clear(self._mem, True)
        shared = shared_prefix(ids) if len([k for k in counts if k]) > 1 else 0
        if shared:  # few-shot prompts share their examples: evaluate them once for every prompt
            self._eval_prefix(ids[0][:shared])
        reserved = shared  # KV cells promised: the shared prefix, then live sequences and their prompts

        while pending or live:
            # Admit: give free slots to the next prompt while the context can hold them.
            while pending and free:
                p, todo = pending[0]
                k = min(todo, len(free), max(0, (self.n_ctx - reserved - len(ids[p]) + shared) // max_tokens))
                if k == 0:
                    if not live:  # nothing will free cells: cannot make progress
                        raise ContextOverflow(
                            f"sampler context of {self.n_ctx} tokens cannot hold one sequence of "
                            f"{len(ids[p])} + {max_tokens} tokens: raise sampler.n_ctx"
                        )
                    break
                seqs = [free.pop() for _ in range(k)]
                first = self._eval_prompt(ids[p], seqs, shared)  # one evaluation, cells shared by all k
                group = len(held)
                held[group] = k
                reserved += len(ids[p]) - shared + k * max_tokens
                admitted = []
                for s in seqs:
                    j = next_sample[p]
                    next_sample[p] += 1
                    rng = np.random.default_rng([seed, keys[p][0], keys[p][1] + j])
                    live[s] = _Slot(s, p, j, group, rng, len(ids[p]), max_tokens)
                    admitted.append(live[s])
                self._advance(admitted, np.broadcast_to(first, (k, self.n_vocab)), temperature, top_p,
                              max_tokens, stops)
                if todo - k:
                    pending[0] = (p, todo - k)  # the rest start later, with their own prompt evaluation
                else:
                    pending.popleft()
                if progress:
                    progress(k)

            # Retire finished sequences, freeing their slot and cells.
            for s in [s for s, sl in live.items() if sl.done]:
                sl = live.pop(s)
                results[sl.prompt][sl.sample] = _finish(sl, ids[sl.prompt], stops)
                self._ll.llama_memory_seq_rm(self._mem, s, -1, -1)
                free.append(s)
                reserved -= sl.budget
                held[sl.group] -= 1
                if held[sl.group] == 0:
                    reserved -= len(ids[sl.prompt]) - shared
            if not live:
                continue

            # One decode step for every live sequence.
            order = list(live.values())
            self._timed_decode("decode_s", [(sl.ids[-1], sl.pos, (sl.seq_id,), True) for sl in order])
            self.decode_calls += 1
            self.decode_rows += len(order)
            for sl in order:
                sl.pos += 1
            self._advance(order, self._logits(len(order)), temperature, top_p, max_tokens, stops)
            if progress:
                progress(len(order))
        scored_at = temperature if temperature > 0 else 1.0
        for group in results:
            for c in group:
                c.temperature = scored_at
                self.tokens_generated += len(c.token_ids)
        return results  # type: ignore[return-value]

    def _advance(
        self,
        slots: list[_Slot],
        logits: np.ndarray,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stops: list[str],
    ) -> None:
        """Sample one token for each slot from its logits row and update its state."""
        t0 = time.perf_counter()
        toks, lps = sample_rows(logits, temperature, top_p, [sl.rng for sl in slots])
        self.timings["sample_s"] += time.perf_counter() - t0
        for sl, tok, lp in zip(slots, toks.tolist(), lps.tolist()):
            sl.ids.append(tok)
            sl.logprobs.append(lp)
            if self.is_eog(tok):
                sl.done = "stop"
                continue
            sl.raw += self._piece(tok)
            sl.ends.append(len(sl.raw))
            if stops:
                tail = sl.raw[-(max(map(len, stops)) * 4 + 16) :].decode("utf-8", errors="ignore")
                if any(s in tail for s in stops):
                    sl.done = "stop"
                    continue
            if len(sl.ids) >= max_tokens:
                sl.done = "length"

    # ----------------------------------------------------------------- scoring
    def score(
        self, prompt_ids: Sequence[int], completion_ids: Sequence[int], stepwise: bool = True
    ) -> list[float]:
        """Log-probabilities of `completion_ids` after `prompt_ids` (raw distribution).

        `stepwise` replays generation's schedule (prompt in one batch, then one token per
        decode), which reproduces a single sequence's sampled log-probs exactly; quantised
        kernels give slightly different numbers for other batch shapes. `stepwise=False`
        scores everything in one batch, much faster.
        """
        prompt_ids, completion_ids = list(prompt_ids), list(completion_ids)
        if not prompt_ids or not completion_ids:
            raise ValueError("score needs a non-empty prompt and completion")
        self.check_fits(len(prompt_ids) + len(completion_ids), 0)
        self._ll.llama_memory_clear(self._mem, True)
        try:
            if stepwise:
                rows = [self._eval_prompt(prompt_ids, [0])]
                for i, tok in enumerate(completion_ids[:-1]):
                    self._decode([(tok, len(prompt_ids) + i, (0,), True)])
                    rows.append(self._logits(1)[0])
                    rows[-1] = rows[-1].copy()
                return [log_softmax_at(r, t) for r, t in zip(rows, completion_ids)]
            all_ids = prompt_ids + completion_ids
            first = len(prompt_ids) - 1  # this position's logits predict the first completion token
            out: list[float] = []
            for start in range(0, len(all_ids), self.n_batch):
                chunk = all_ids[start : start + self.n_batch]
                want = [first <= start + i < len(all_ids) - 1 for i in range(len(chunk))]
                self._decode([(t, start + i, (0,), w) for i, (t, w) in enumerate(zip(chunk, want))])
                logits = self._logits(sum(want))
                targets = [all_ids[start + i + 1] for i, w in enumerate(want) if w]
                out.extend(log_softmax_at(logits[r], t) for r, t in enumerate(targets))
            return out
        finally:
            self._ll.llama_memory_clear(self._mem, True)


def sample_plan(
    n_prompts: int, n: int | Sequence[int], max_tokens: int, streams: Sequence[tuple[int, int]] | None
) -> tuple[list[int], list[tuple[int, int]]]:
    """Checked samples per prompt and each prompt's random stream (key, first sample)."""
    counts = [n] * n_prompts if isinstance(n, int) else [int(k) for k in n]
    if len(counts) != n_prompts or (streams is not None and len(streams) != n_prompts):
        raise ValueError("n and streams need one entry per prompt")
    if any(k < 1 for k in counts) or max_tokens < 1:
        raise ValueError("n and max_tokens must be >= 1")
    return counts, list(streams) if streams is not None else [(i, 0) for i in range(n_prompts)]


def _finish(sl: _Slot, prompt_ids: list[int], stops: list[str]) -> Completion:
    """Freeze a finished slot into a Completion; text is cut before the first stop string.

    The tokens that wrote the stop string (and one that straddles its start) are cut from
    token_ids and logprobs too: a stop string is the sampler's, not the policy's answer,
    and must never be trained on.
    """
    text = bytes(sl.raw).decode("utf-8", errors="replace")
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    ids, lps = sl.ids, sl.logprobs
    if cut >= 0:
        keep = bisect.bisect_right(sl.ends, len(text[:cut].encode("utf-8")))
        ids, lps = ids[:keep], lps[:keep]
    return Completion(
        text=text if cut < 0 else text[:cut],
        token_ids=ids,
        logprobs=lps,
        finish_reason=sl.done or "length",
        prompt_ids=prompt_ids,
    )


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log p(token) under softmax(logits), computed stably in float64."""
    m = float(logits.max())
    lse = m + float(np.log(np.exp(logits - m, dtype=np.float64).sum()))
    return float(logits[token]) - lse


_BLOCK = 1024  # vocabulary block for two-level inverse-CDF sampling


MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate evaluation


def shared_prefix(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (its last
    token's logits start the sampling); 0 when fewer than MIN_SHARED_PREFIX."""
    if len(ids) < 2:
        return 0
    limit = min(len(x) for x in ids) - 1
    n = 0
    first = ids[0]
    while n < limit and all(x[n] == first[n] for x in ids):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def sample_rows(
    logits: np.ndarray, temperature: float, top_p: float, rngs: Sequence[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one token per row; return tokens and their log-probs under the tempered distribution.

    The log-probs are log softmax(logits / T): the policy that sampled, which the trainer
    scores the same way (as TRL and verl do), so the importance weight compares like with
    like. Temperature 0 is greedy, with raw (T = 1) log-probs. Full-vocabulary sampling uses a two-level inverse CDF (block
    sums, then one block), so a 262k vocabulary costs one exp pass and no full cumsum; the
    block sums also give the normaliser. Nucleus sampling sorts only the top candidates
    unless their mass falls short of `top_p`.
    """
    rows = np.arange(len(logits))
    m = logits.max(axis=1, keepdims=True)
    if temperature <= 0:
        toks = logits.argmax(axis=1)
        return toks, logits[rows, toks] - _logsumexp(logits, m)
    inv_t = np.float32(1.0 / temperature)
    shifted = np.subtract(logits, m)
    expd = np.exp(shifted * inv_t if temperature != 1.0 else shifted)
    blocks = _block_sums(expd)
    log_z = np.log(blocks.sum(axis=1))
    u = np.array([rng.random() for rng in rngs])
    if top_p >= 1.0:
        toks = _inverse_cdf(expd, blocks, u)
    else:
        toks = _nucleus_rows(expd, top_p, u)
    return toks, shifted[rows, toks].astype(np.float64) * float(inv_t) - log_z


def _logsumexp(logits: np.ndarray, m: np.ndarray) -> np.ndarray:
    return m[:, 0] + np.log(_block_sums(np.exp(logits - m)).sum(axis=1))


def _block_sums(probs: np.ndarray) -> np.ndarray:
    """(rows, ceil(V / _BLOCK)) float64 sums of consecutive vocabulary blocks."""
    n, v = probs.shape
    if v % _BLOCK == 0:
        return probs.reshape(n, v // _BLOCK, _BLOCK).sum(axis=2).astype(np.float64)
    return np.add.reduceat(probs, np.arange(0, v, _BLOCK), axis=1, dtype=np.float64)


def _inverse_cdf(probs: np.ndarray, blocks: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index where each row's unnormalised CDF crosses u * total, blockwise."""
    cum = np.cumsum(blocks, axis=1)
    out = np.empty(len(probs), dtype=np.int64)
    for r in range(len(probs)):
        target = u[r] * cum[r, -1]
        b = min(int(np.searchsorted(cum[r], target, side="right")), cum.shape[1] - 1)
        before = cum[r, b - 1] if b else 0.0
        start = b * _BLOCK
        inner = np.cumsum(probs[r, start : start + _BLOCK], dtype=np.float64)
        k = min(int(np.searchsorted(inner, target - before, side="right")), len(inner) - 1)
        out[r] = start + k
    return out


def _block_max(probs: np.ndarray) -> np.ndarray:
    """(rows, ceil(V / _BLOCK)) maxima of consecutive vocabulary blocks."""
    n, v = probs.shape
    if v % _BLOCK == 0:
        return probs.reshape(n, v // _BLOCK, _BLOCK).max(axis=2)
    return np.maximum.reduceat(probs, np.arange(0, v, _BLOCK), axis=1)


def _nucleus_rows(expd: np.ndarray, top_p: float, u: np.ndarray) -> np.ndarray:
    """One nucleus draw per row of unnormalised probabilities."""
    bmax = _block_max(expd)
    totals = expd.sum(axis=1, dtype=np.float64)  # in float64, as the definition sums: the cut is exact
    return np.array([_nucleus(expd[r], bmax[r], float(totals[r]), top_p, float(u[r])) for r in range(len(expd))],
                    dtype=np.int64)


def _nucleus(probs: np.ndarray, bmax: np.ndarray, total: float, top_p: float, u: float) -> int:
    """Sample from the smallest set of top tokens holding `top_p` of the mass.

    Sorting the whole vocabulary for every token costs milliseconds a row, more than the rest of
    sampling. The nucleus is always the top of the sorted list, so only tokens at or above a floor
    are gathered, from the blocks whose maximum reaches it (`bmax`); if they hold `top_p` of the mass
    (`total`), every token left out is smaller than every one kept and the draw is exactly the
    full sort's. Lower floors, then the whole vocabulary, cover flat distributions. Ties sort by
    token id.
    """
    need = top_p * total
    top = float(bmax.max())
    for floor in (top * _NUCLEUS_FLOORS[0], top * _NUCLEUS_FLOORS[1], None):
        if floor is None:
            cand = np.arange(len(probs))
            break
        hit = np.flatnonzero(bmax >= floor)
        cand = (hit[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
        cand = cand[cand < len(probs)]
        cand = cand[probs[cand] >= floor]
        if float(probs[cand].sum(dtype=np.float64)) >= need:
            break
    cand = cand[np.argsort(-probs[cand], kind="stable")]
    cum = np.cumsum(probs[cand], dtype=np.float64)
    keep = min(int(np.searchsorted(cum, need, side="left")) + 1, len(cum))
    cum = cum[:keep]
    return int(cand[min(int(np.searchsorted(cum, u * cum[-1], side="right")), keep - 1)])
