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
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ContextOverflow, MinisirError, ModelNotFound
from .llama_runtime import Vocabulary, _llama, amx_workaround_needed, model_params, quiet_llama_logs
from .token_sampling import log_softmax_at, sample_rows

# Bumped when sampled numbers change (log-probs at T, the shared prefix's batch shapes): cached
# evaluations made by an older sampler are not reused next to new ones.
SAMPLER_VERSION = 2


UNFINISHED = ("length", "loop")  # finish reasons of a completion that never finished its answer


@dataclass
class Completion:
    """One sampled continuation, with what the trainer needs to learn from it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOG token or stop string) | "length" | "loop" (its text repeats itself: loop_at)
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
        loop_repeats: int = 0,
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
        # A completion whose text ends in this many copies of one block is stopped (0 = never): see loop_at.
        self.loop_repeats = int(loop_repeats)
        self.loops_stopped = 0
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
        loop_repeats: int | None = None,
    ) -> list[list[Completion]]:
        """Sample `n` completions for each prompt (or n[i] for prompt i); returns them grouped by prompt.

        Sample j of prompt i draws from the stream (seed, i, j). `streams[i] = (key, first)`
        makes it (seed, key, first + j) instead: a data-parallel rank that samples part of a
        step's work then draws exactly what one process sampling all of it would.
        `progress`, when given, is called with the number of tokens produced each step.
        `loop_repeats` (default: the sampler's) stops a completion whose text has come to repeat itself
        (finish_reason "loop"); the others keep their own random streams, though the batch's new shape can
        move a near-tie through llama.cpp's batch-dependent rounding (2 of 152 solutions in RESULTS' A/B).
        """
        repeats = self.loop_repeats if loop_repeats is None else int(loop_repeats)
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
                              max_tokens, stops, repeats)
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
            self._advance(order, self._logits(len(order)), temperature, top_p, max_tokens, stops, repeats)
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
        loop_repeats: int = 0,
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
            if loop_repeats and loop_at(sl.raw, loop_repeats):
                sl.done = "loop"
                self.loops_stopped += 1
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


LOOP_BLOCK = (12, 60)  # bytes: the shortest and longest block loop_at looks for


def loop_at(raw: bytes | bytearray, repeats: int, block: tuple[int, int] = LOOP_BLOCK) -> bool:
    """Whether `raw` ends in `repeats` back-to-back copies of one block of block[0]-block[1] bytes
    holding at least 3 distinct bytes (so a rule line, a table's |---| or indentation is no loop).

    Why: a small model stuck in a loop ("= 16 + 15/4 = 16 + 15/4 = ...") writes to its token limit and
    never answers, and its tail keeps a nearly empty batch decoding. On the fixed stretch run's solver
    completions (RESULTS.md, sixth sitting), 4 copies caught 82% of those that hit the limit, about
    half-way through them, and none of the 337 right ones.
    """
    n = len(raw)
    for p in range(block[0], min(block[1], n // repeats) + 1):
        last = raw[n - p:]
        if raw[n - 2 * p:n - p] != last:  # the cheap test first: most blocks end here
            continue
        if all(raw[n - (k + 1) * p:n - k * p] == last for k in range(2, repeats)) and len(set(last)) >= 3:
            return True
    return False


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
