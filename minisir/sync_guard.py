"""The sync guard in a run: before each step, is llama.cpp sampling with the adapter the trainer holds?

`sync.py` has the statistic (torch-free, on arrays); this module scores the probe texts in both
engines, applies the recipe's limits, and decides: go on, reload the adapter and go on, warn once,
or stop the run with one line that says how to resume.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from .errors import MinisirError
from .sync import HYPOTHESES, SyncReading, gap_limit, gross, probe_text, read, verdict

# Two engines running the same weights disagree by about 0.04 nats/token on the bundled Q4_K_M
# model (llama.cpp quantises activations); a different model disagrees by far more.
SYNC_FLOOR_LIMIT = 0.5
# A fixed text both engines score before each step (SyncGuard.check), with up to SYNC_TEXTS of the
# last step's completions (sync.probe_text).
SYNC_PROBE = ("Problem: What is 12 + 7?\nSolution:", " 12 + 7 = 19. The answer is \\boxed{19}.")
SYNC_TEXTS = 3


class SyncGuard:
    """One run's guard: the sampler, the (lazily built) trainer, the recipe's trainer settings (read at
    each check), the adapter scale the sampler should use, and how to reload the committed adapter."""

    def __init__(self, sampler: Any, trainer: Callable[[], Any], settings: Any, adapter_scale: float,
                 reload: Callable[[], str]) -> None:
        self.sampler = sampler
        self._trainer = trainer
        self.settings = settings
        self.adapter_scale = adapter_scale
        self._reload = reload
        self.floor: float | None = None  # the no-adapter gap, measured once
        self.strike = False  # the previous check failed the slope or gap test alone
        self._probe: tuple[list[int], list[int]] | None = None  # SYNC_PROBE's ids, tokenized once
        self.texts: list[tuple[list[int], list[int]]] = []  # recent completions (remember)

    def check(self, step: int | None = None) -> dict[str, float]:
        """Check that llama.cpp samples with the trainer's adapter; returns the sync_* metrics.

        Run before a step samples: a half-loaded, unloaded, mis-scaled or other run's adapter in
        the sampler (other RL stacks have silently trained on one) is caught before anything of
        the step is sampled. A failed check first reloads the adapter, re-exported from the
        trainer's state, and checks again; only a second failure stops the run, with one line
        naming the adapter and how to resume. A failure of the slope or gap test alone (sync.gross
        is false) stops it only when the previous step's check failed too: one such reading can be the
        probe's noise, a real fault shows on the next step's probe texts as well. minisir/sync.py
        says what is measured and why.
        """
        if self.floor is None:
            self.floor = self.base_probe_gap()
        confidence, tolerance = self.settings.sync_confidence, self.settings.sync_tolerance
        max_gap = gap_limit(self.floor, self.settings.sync_gap_ratio)
        reading = self.read()
        problem = (verdict(reading, self.adapter_scale, tolerance, confidence, max_gap, self.floor)
                   if confidence is not None else None)
        if problem is None:
            self.strike = False
            return reading.metrics()
        adapter = self._reload()
        again = self.read()
        still = verdict(again, self.adapter_scale, tolerance, confidence, max_gap, self.floor)
        where = f"step {step}" if step is not None else "the next step"
        if still is None:
            self.strike = False
            tqdm.write(f"sync: {problem}; reloaded {adapter} from the trainer's state and the check passes; "
                       f"{where} goes on")
            return {**again.metrics(), "sync_recovered": 1.0}
        if not gross(again, confidence, self.floor) and not self.strike:
            self.strike = True
            tqdm.write(f"sync: {still}, also after reloading {adapter}; one such reading can be the probe's noise, "
                       f"so {where} goes on, and a second check in a row that shows it stops the run")
            return {**again.metrics(), "sync_strike": 1.0}
        held = self.sampler.adapter_path or "none (the base model)"
        raise MinisirError(
            f"{where} not committed: {still}, also after reloading the adapter from the trainer's state; the "
            f"sampler's adapter is {held}. Check sampler.adapter_scale and that llama.cpp loads this model's "
            "adapters, then rerun the same command to resume (trainer.sync_confidence: null turns the guard off)")

    def read(self) -> SyncReading:
        """Score the probe texts in llama.cpp and in the trainer under each hypothesis (sync.HYPOTHESES)."""
        from .grpo import Sample

        texts = [self.probe_ids(), *self.texts]
        lp_sampler = np.concatenate([self.sampler.score(p, c, stepwise=False) for p, c in texts])
        probes = [Sample(p, c, [], 0.0, "probe") for p, c in texts]
        trainer = {k: np.concatenate(self._trainer().logprobs(probes, base=k == 0.0, scale=k * self.adapter_scale))
                   for k in HYPOTHESES}
        fixed = len(texts[0][1])  # the fixed text's completion tokens come first
        return read(lp_sampler, trainer, own_from=fixed if len(texts) > 1 else None)

    def probe_ids(self) -> tuple[list[int], list[int]]:
        """SYNC_PROBE as (prompt, completion) ids, tokenized once."""
        if self._probe is None:
            self._probe = (self.sampler.tokenize(SYNC_PROBE[0]), self.sampler.tokenize(SYNC_PROBE[1], add_bos=False))
        return self._probe

    def remember(self, samples: list) -> None:
        """Keep a few of this step's completions (one per group) as the next checks' probe texts:
        the adapter moves most what the policy itself writes."""
        picked, groups = [], set()
        for s in samples:
            if s.completion_ids and s.group not in groups:
                groups.add(s.group)
                picked.append(probe_text(s.prompt_ids, s.completion_ids))
            if len(picked) == SYNC_TEXTS:
                break
        if picked:
            self.texts = picked

    def probe_gap(self, base: bool) -> float:
        """Mean |trainer - sampler| token log-prob of SYNC_PROBE (`base`: the trainer's LoRA off)."""
        from .grpo import Sample

        prompt_ids, completion = self.probe_ids()
        lp_sampler = np.array(self.sampler.score(prompt_ids, completion, stepwise=False))
        probe = Sample(prompt_ids, completion, [], 0.0, "probe")
        lp_trainer = np.array(self._trainer().logprobs([probe], base=base)[0])
        return float(np.mean(np.abs(lp_sampler - lp_trainer)))

    def base_probe_gap(self) -> float:
        """The engines' own disagreement with no adapter on either side; refuse a different model."""
        adapter, scale = self.sampler.adapter_path, self.sampler.adapter_scale
        self.sampler.clear_adapter()
        try:
            floor = self.probe_gap(base=True)
        finally:
            if adapter is not None:
                self.sampler.set_adapter(adapter, scale)
        if floor > SYNC_FLOOR_LIMIT:
            raise MinisirError(
                f"llama.cpp and the trainer disagree by {floor:.3f} nats per token on a probe text with no "
                f"adapter (more than {SYNC_FLOOR_LIMIT}): model.hf_dir is not the model of model.gguf; point "
                "model.hf_dir at the GGUF's own checkpoint, or leave it empty to train the dequantised GGUF")
        return floor
