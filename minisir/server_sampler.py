"""Sampling on an OpenAI-compatible completions server: `sampler.backend: openai`.

vLLM, SGLang or llama.cpp's servers do the sampling; minisir keeps only the GGUF's
tokenizer locally (vocab_only) so prompts, token ids and tag offsets mean exactly what
they mean with the in-process sampler. Each request asks for `n` samples, the sampled
tokens (as ids where the server can: vLLM's `return_tokens_as_token_ids`) with their
log-probs, and the stop strings. Servers that return fewer choices than `n` (llama.cpp's
Python server ignores `n`) are topped up with further requests.

Adapters reach the server through vLLM's runtime LoRA API (`/v1/load_lora_adapter`), in
PEFT format next to the step's GGUF; requests then name the adapter as their model. A
server without that API is refused at start. Any failure of the server is one
`ServerError` line: the step in flight is not committed and is retried on resume.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import requests

from .errors import MinisirError, ModelNotFound
from .llama_runtime import Vocabulary
from .sampler import Completion, sample_plan

log = logging.getLogger(__name__)

_ID_PREFIX = "token_id:"  # vLLM's spelling of a token when return_tokens_as_token_ids is set


class ServerError(MinisirError):
    """The completions server is down, too slow, or answered something unusable."""


class ServerSampler(Vocabulary):
    """The `Sampler` interface, with generation done by an OpenAI-compatible server."""

    can_score = False  # no portable way to score given token ids; the trainer's logprob_gap still compares

    def __init__(
        self,
        url: str,
        model_path: str | os.PathLike,
        served_model: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 600.0,
    ) -> None:
        super().__init__(model_path)  # tokenizer and metadata only
        base = url.rstrip("/")
        self.url = base
        self.api = base if base.endswith("/v1") else base + "/v1"
        self.timeout_s = float(timeout_s)
        self.n_parallel = max(1, int(max_concurrency))
        self._http = requests.Session()
        self.served_model = served_model or self._first_model()
        self.adapter_path: Path | None = None
        self.adapter_scale = 0.0
        self._lora: str | None = None  # the server-side name of the loaded adapter
        self._by_piece: dict[str, int] | None = None
        self._eos = int(self._ll.llama_vocab_eos(self._vocab))

    # ----------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, body: dict | None = None, ok_404: bool = False) -> Any:
        """One call to the server; every failure becomes a ServerError line naming the URL."""
        where = f"sampler.url {self.url}"
        try:
            resp = self._http.request(method, self.api + path, json=body, timeout=self.timeout_s)
        except requests.exceptions.Timeout:
            raise ServerError(f"{where}: no answer to {path} within sampler.timeout_s={self.timeout_s:g}s; "
                              "the step in flight was not committed: check the server and rerun") from None
        except requests.exceptions.RequestException as exc:
            reason = type(exc).__name__
            raise ServerError(f"{where}: cannot reach the server ({reason}); start it or fix sampler.url, "
                              "then rerun (the step in flight was not committed)") from None
        if ok_404 and resp.status_code in (404, 405):
            return None
        if resp.status_code >= 400:
            text = " ".join(resp.text.split())[:200]
            raise ServerError(f"{where}: {path} answered HTTP {resp.status_code}: {text}")
        try:
            return resp.json()
        except ValueError:
            text = " ".join(resp.text.split())[:80]
            raise ServerError(f"{where}: {path} answered something that is not JSON ({text!r}); "
                              "is it an OpenAI-compatible server?") from None

    def _first_model(self) -> str:
        """The served model's name, when the recipe leaves sampler.served_model empty."""
        listing = self._request("GET", "/models")
        try:
            return str(listing["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"sampler.url {self.url}: /models lists no model; set sampler.served_model "
                              "or check the server") from None

    # ----------------------------------------------------------------- adapters
    def check_runtime_adapters(self) -> None:
        """Refuse a server that cannot load LoRA adapters at runtime, before any step runs.

        The probe is an empty load request: a server with the API refuses it (HTTP 4xx),
        one without the route answers 404.
        """
        try:
            answer = self._request("POST", "/load_lora_adapter", {}, ok_404=True)
        except ServerError as exc:
            if " answered HTTP 4" in str(exc):  # the route exists; it refused the empty request
                return
            raise
        if answer is None:
            raise ServerError(
                f"sampler.url {self.url}: the server cannot load LoRA adapters at runtime (no "
                "/v1/load_lora_adapter), so it could never sample the trained policy; use vLLM with "
                "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or sampler.backend: llama_cpp")

    def set_adapter(self, path: str | os.PathLike, scale: float = 1.0) -> None:
        """Load the step's PEFT adapter (the GGUF path without .gguf) and name it in requests."""
        if float(scale) != 1.0:
            raise MinisirError(f"sampler.adapter_scale={scale:g}: a server applies adapters at scale 1 only; "
                               "set it to 1 with sampler.backend: openai")
        gguf = Path(path)
        peft = gguf.with_suffix("") if gguf.suffix == ".gguf" else gguf
        if not (peft / "adapter_config.json").is_file():
            raise ModelNotFound(f"adapter {peft} (PEFT format, for the server) does not exist; it is written with "
                                "each step's GGUF under sampler.backend: openai: start a fresh run directory or "
                                "sample with sampler.backend: llama_cpp")
        resolved = str(peft.resolve())
        name = f"minisir-{peft.name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
        if name != self._lora:
            self._request("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": resolved})
            self._unload()
        self._lora, self.adapter_path, self.adapter_scale = name, gguf, 1.0

    def clear_adapter(self) -> None:
        """Back to the base model: requests name the served model again."""
        self._unload()
        self._lora, self.adapter_path, self.adapter_scale = None, None, 0.0

    def _unload(self) -> None:
        """Free the previous adapter on the server; a failure only costs server memory."""
        if self._lora is None:
            return
        try:
            self._request("POST", "/unload_lora_adapter", {"lora_name": self._lora})
        except ServerError as exc:
            log.warning("could not unload %s: %s", self._lora, exc)

    def close(self) -> None:
        self._http.close()
        super().close()

    # ----------------------------------------------------------------- sampling
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
        """`Sampler.generate` on the server: `n` completions per prompt, grouped by prompt.
        (loop_repeats is accepted and not applied: a server stops at its stop strings and token limit.)

        Requests run `sampler.max_concurrency` at a time; each is seeded from
        (seed, prompt, first sample), so a rerun asks the server for the same draws (whether
        it honours seeds exactly under batching is the server's business).
        """
        counts, keys = sample_plan(len(prompts), n, max_tokens, streams)
        ids = [self.tokenize(p) for p in prompts]
        stops = [s for s in stop if s]
        results: list[list[Completion]] = [[] for _ in prompts]
        body = {"max_tokens": int(max_tokens), "temperature": float(temperature), "top_p": float(top_p),
                "logprobs": 1, "return_tokens_as_token_ids": True, "stop": stops or None}

        def ask(i: int, want: int) -> tuple[int, list[Completion]]:
            first = keys[i][1] + len(results[i])
            req = {**body, "model": self._lora or self.served_model, "prompt": prompts[i], "n": want,
                   "seed": _request_seed(seed, keys[i][0], first)}
            return i, self._completions(self._request("POST", "/completions", req), ids[i], stops)

        with ThreadPoolExecutor(self.n_parallel) as pool:
            running = {pool.submit(ask, i, k) for i, k in enumerate(counts)}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, got = fut.result()
                    if not got:
                        raise ServerError(f"sampler.url {self.url}: /completions answered no choices")
                    got = got[: counts[i] - len(results[i])]
                    results[i].extend(got)
                    if progress:
                        progress(sum(len(c.token_ids) for c in got))
                    if len(results[i]) < counts[i]:  # the server gave fewer than n: ask for the rest
                        running.add(pool.submit(ask, i, counts[i] - len(results[i])))
        for c in (c for group in results for c in group):
            _at_temperature(c, temperature)
        return results

    def _completions(self, answer: Any, prompt_ids: list[int], stops: list[str]) -> list[Completion]:
        """The choices of one /completions answer as Completions, in the server's order."""
        try:
            choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
            return [self._completion(c, prompt_ids, stops) for c in choices]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ServerError(f"sampler.url {self.url}: /completions answered a malformed completion "
                              f"({type(exc).__name__}: {exc}); is it an OpenAI-compatible server?") from None

    def _completion(self, choice: dict, prompt_ids: list[int], stops: list[str]) -> Completion:
        """One choice: its text, the sampled ids and their log-probs (both cut at a stop string)."""
        text = str(choice["text"])
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        lp = choice.get("logprobs") or {}
        tokens = list(lp.get("tokens") or [])
        logprobs = list(lp.get("token_logprobs") or [])
        if len(logprobs) != len(tokens) or any(x is None or not math.isfinite(float(x)) for x in logprobs):
            logprobs = []
        token_ids = self._token_ids(tokens, text)
        if token_ids is None:  # sampled tokens unknown: the canonical tokens, trained without weights
            token_ids, logprobs = self.tokenize(text, add_bos=False), []
        keep = self._kept(token_ids, text)
        cut = keep < len(token_ids)
        token_ids, logprobs = token_ids[:keep], [float(x) for x in logprobs[:keep]]
        if finish == "stop" and not cut and not (token_ids and self.is_eog(token_ids[-1])):
            # Ended by an end-of-generation token the server left out (llama.cpp's Python server
            # does): train on stopping as the in-process sampler does, without its log-prob.
            token_ids, logprobs = token_ids + [self._eos], []
        if len(logprobs) != len(token_ids):
            logprobs = []
        return Completion(text=text, token_ids=token_ids, logprobs=logprobs, finish_reason=finish,
                          prompt_ids=prompt_ids)

    def _token_ids(self, tokens: list[str], text: str) -> list[int] | None:
        """The ids of the sampled tokens: given by the server, or recovered from their pieces."""
        if not tokens:
            return None
        if all(isinstance(t, str) and t.startswith(_ID_PREFIX) for t in tokens):
            return [int(t[len(_ID_PREFIX):]) for t in tokens]
        if self._by_piece is None:
            self._by_piece = self._unique_pieces()
        found = [self._by_piece.get(t) for t in tokens]
        if any(f is None for f in found):
            return None
        ids = [int(f) for f in found]  # type: ignore[arg-type]
        return ids if self.detokenize(ids).startswith(text) else None

    def _unique_pieces(self) -> dict[str, int]:
        """Token text -> id, for every text one token spells; where several do (a byte-fallback
        token spells "1" too), the one the tokenizer itself writes for that text."""
        seen: dict[str, int] = {}
        clash: set[str] = set()
        for tok in range(self.n_vocab):
            piece = self._piece(tok).decode("utf-8", errors="ignore")
            if piece in seen:
                clash.add(piece)
            seen[piece] = tok
        for piece in clash:
            del seen[piece]
            own = self.tokenize(piece, add_bos=False) if piece else []
            if len(own) == 1:
                seen[piece] = own[0]
        return seen

    def _kept(self, token_ids: list[int], text: str) -> int:
        """How many tokens to keep: none that wrote a stop string the server cut from the text."""
        ends, raw = [], 0
        for tok in token_ids:
            if not self.is_eog(tok):
                raw += len(self._piece(tok))
                ends.append(raw)
        size = len(text.encode("utf-8"))
        if raw <= size:
            return len(token_ids)  # nothing was cut (an end-of-generation token is kept)
        return bisect.bisect_right(ends, size)

    def score(self, prompt_ids, completion_ids, stepwise: bool = True) -> list[float]:
        raise MinisirError("sampler.backend: openai cannot score given token ids; use sampler.backend: llama_cpp")


def _request_seed(seed: int, key: int, first: int) -> int:
    """A request's seed from (run seed, prompt key, first sample): what a rerun sends again."""
    return int(np.random.SeedSequence([seed, key, first]).generate_state(1)[0] & 0x7FFFFFFF)


def _at_temperature(c: Completion, temperature: float) -> None:
    """Mark a completion as drawn at `temperature`, the T the trainer scores it at.

    Servers return log-probs of the raw (T = 1) distribution (vLLM's default logprobs mode),
    which are not the sampling policy's at T != 1: those are dropped, so the trainer weighs
    such completions 1 instead of correcting with a wrong ratio.
    """
    if temperature > 0 and temperature != 1.0:
        c.temperature, c.logprobs = float(temperature), []
