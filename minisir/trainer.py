"""LoRA GRPO trainer (PyTorch + PEFT) on the sampler's own token ids.

What one `GRPOTrainer.step` optimises, per trained completion token t of sample i:

    A_i    = r_i - mean(r_group)            (divided by std(r_group) when scale_std)
    ratio  = exp(lp - lp_old)               lp_old: trainer log-prob before this step's update(s)
    w      = min(exp(lp_old - lp_sampler), is_cap)   truncated importance weight (TIS), no gradient
    l_it   = -w * min(ratio * A_i, clip(ratio, 1 - eps_low, 1 + eps_high) * A_i)
             + kl_coef * k3(lp_ref, lp)     k3 = exp(lp_ref - lp) - (lp_ref - lp) - 1,
                                            lp_ref = same model with the LoRA disabled
    loss   = sum(l_it) / (trained tokens in the step)              loss_agg="token" (DAPO)
           = sum(l_it) / (trained sequences * max_completion_tokens)  loss_agg="drgrpo"

Why the importance weight: the samples come from llama.cpp on a quantized model, the
gradient from the dequantized PyTorch model. Their log-probs differ; `w` reweights each token
from the sampler's distribution to the trainer's old policy, truncated at `is_cap` to bound
variance (truncated importance sampling, Yao et al. 2025). With one update per step lp_old
equals lp (detached), so ratio == 1 and only `w` corrects the mismatch; `logprob_gap` reports
mean |lp_old - lp_sampler| every step so the mismatch is visible.

Groups whose reward std is below min_reward_std * the samples' reward_scale carry no signal
(float noise, or a diversity wobble of a continuous reward) and are skipped. Prompt tokens,
tokens with loss_mask 0 and (by default) truncated completions get no loss term; a truncated
completion still counts in its group's reward mean and std. Log-probs of chosen tokens
are computed in checkpointed chunks from the final hidden states, so the full
(batch, seq, vocab) logits (262k vocab) are never materialised.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .atomic import atomic_dir
from .data_parallel import Ranks
from .errors import MinisirError, RecipeError
from .grpo import DEFAULT_TARGET_MODULES, Sample, TrainerConfig, group_advantages  # noqa: F401  (public here too)
from .hf_model import load_hf_model
from .trainer_batches import MicroBatch, length_groups, make_row, pack, share_rows, validate_samples

log = logging.getLogger(__name__)

_STATE_FILE = "trainer_state.pt"
_ADAPTER_DIR = "adapter"
_STATE_FORMAT = 1
# Config fields that change parameter shapes or names; a saved state needs the same values.
_SHAPE_FIELDS = ("lora_rank", "target_modules")


def _rng_state() -> tuple:
    """Torch's CPU and CUDA generator states: where the next dropout masks come from."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class _ChosenLogprob(torch.autograd.Function):
    """Chosen-token log-probs (and entropies) of a chunk through a frozen lm_head.

    The (n, vocab) logits are used once and freed: forward also computes d lp / d hidden, an
    (n, H) tensor, so backward is one multiply. That is exact because the head's weight gets no
    gradient (the LoRA does not touch lm_head), and it saves the logits recompute that
    activation checkpointing would need: 2 vocab-sized matmuls per chunk instead of 3.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, inv_temp):
        logits = (hidden @ weight.t()).float()
        if softcap:
            squashed = torch.tanh(logits / softcap)
            logits = squashed * softcap
        logp = torch.log_softmax(logits * inv_temp[:, None], dim=-1)
        lp = logp.gather(-1, targets[:, None]).squeeze(-1)
        probs = logp.exp()
        entropy = -(probs * logp).sum(-1)
        del logp, logits
        if ctx.needs_input_grad[0]:
            grad_logits = probs.neg_()  # d lp_y / d z = onehot(y) - softmax(z)
            grad_logits.scatter_add_(-1, targets[:, None], torch.ones_like(lp)[:, None])
            grad_logits.mul_(inv_temp[:, None])  # through z / T
            if softcap:
                grad_logits.mul_(1 - squashed * squashed)  # through z = c * tanh(x / c)
            ctx.save_for_backward((grad_logits.to(weight.dtype) @ weight).to(hidden.dtype))
        ctx.mark_non_differentiable(entropy)
        return lp, entropy

    @staticmethod
    def backward(ctx, grad_lp, _grad_entropy):
        (dlp_dhidden,) = ctx.saved_tensors
        return grad_lp[:, None].to(dlp_dhidden.dtype) * dlp_dhidden, None, None, None, None


class GRPOTrainer:
    """Owns the PEFT LoRA model and its optimizer; one `step` = one GRPO update on a batch of samples."""

    def __init__(self, cfg: TrainerConfig, gguf_path: Path | None, hf_dir: Path | None = None, seed: int | None = None,
                 ranks: Ranks | None = None):
        from peft import LoraConfig, get_peft_model

        self.cfg = cfg
        self.ranks = ranks or Ranks()  # data-parallel: each rank trains on its share, gradients summed
        self.seed = cfg.seed if seed is None else int(seed)
        torch.manual_seed(self.seed)  # LoRA init and dropout are reproducible from here on
        base = load_hf_model(gguf_path, hf_dir=hf_dir, dtype=cfg.dtype, device=cfg.device)
        self.device = next(base.parameters()).device
        base.config.use_cache = False
        if cfg.gradient_checkpointing:
            kwargs = {"use_reentrant": False}  # reentrant checkpointing needs inputs that require grad
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            self.model = get_peft_model(base, lora)
        except ValueError as exc:
            raise RecipeError(
                f"trainer.target_modules: {cfg.target_modules} do not match the model's layers ({exc}); "
                f"use names such as {DEFAULT_TARGET_MODULES}"
            ) from exc
        self.model.train()
        self._base = self.model.get_base_model()
        self._body = self._base.get_decoder()
        self._head = self._base.get_output_embeddings()
        self._softcap = getattr(self._base.config, "final_logit_softcapping", None)
        self._fast_head = self._frozen_linear_head()
        self.vocab_size = int(self._head.weight.shape[0])
        pad = getattr(self._base.config, "pad_token_id", None)
        self._pad_id = int(pad) if isinstance(pad, int) and 0 <= pad < self.vocab_size else 0
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.step_count = 0
        n_train = sum(p.numel() for p in self.params)
        log.info("LoRA r=%d on %s: %.2fM trainable parameters", cfg.lora_rank, cfg.target_modules, n_train / 1e6)

    # ----------------------------------------------------------------- log-probs
    def _chunk_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor,
                        inv_temp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lm_head + log_softmax(logits / T) on a (n, H) chunk; chosen-token log-probs and entropies (no grad)."""
        logits = self._head(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        logp = torch.log_softmax(logits * inv_temp[:, None], dim=-1)
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, targets[:, None]).squeeze(-1), entropy

    def _frozen_linear_head(self) -> bool:
        """True when lm_head is a plain frozen Linear, so _ChosenLogprob's shortcut is exact."""
        head = self._head
        return (
            type(head) is torch.nn.Linear
            and head.bias is None
            and not any(p.requires_grad for p in head.parameters())
        )

    def _token_logprobs(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs (N,) of the micro-batch's trained tokens under the current model mode."""
        selected = self._shared_hidden(mb) if mb.shared_prompt else self._body(
            input_ids=mb.input_ids, attention_mask=mb.attention_mask, use_cache=False
        ).last_hidden_state[mb.rows, mb.cols]  # only positions that predict trained tokens
        lps, ents = [], []
        for start in range(0, selected.shape[0], self.cfg.logprob_chunk):
            h = selected[start : start + self.cfg.logprob_chunk]
            t = mb.targets[start : start + self.cfg.logprob_chunk]
            it = mb.inv_temp[start : start + self.cfg.logprob_chunk]
            if torch.is_grad_enabled() and self._fast_head:
                lp, ent = _ChosenLogprob.apply(h, self._head.weight, t, self._softcap, it)
            elif torch.is_grad_enabled():
                # Recompute the chunk's logits in backward instead of keeping (n, vocab) per chunk alive.
                lp, ent = checkpoint(self._chunk_logprobs, h, t, it, use_reentrant=False)
            else:
                lp, ent = self._chunk_logprobs(h, t, it)
            lps.append(lp)
            ents.append(ent)
        return torch.cat(lps), torch.cat(ents)

    def _shared_hidden(self, mb: MicroBatch) -> torch.Tensor:
        """Hidden states at mb's trained positions, with the shared prompt forwarded once.

        The prompt's KV cache is repeated for every row and the completions run on top of
        it; gradients flow back through the cache into the prompt's forward, so the result
        (values and gradients) is the full forward's up to float rounding.
        """
        p = mb.shared_prompt
        out = self._body(input_ids=mb.input_ids[:1, :p], use_cache=True)
        h_prompt = out.last_hidden_state[0]  # (P, H)
        if mb.input_ids.shape[1] == p:  # every row trains only its first completion token
            return h_prompt[mb.cols]
        cache = out.past_key_values
        cache.batch_repeat_interleave(mb.input_ids.shape[0])
        width = mb.input_ids.shape[1] - p
        positions = torch.arange(p, p + width, device=mb.input_ids.device).expand(mb.input_ids.shape[0], width)
        h_comp = self._body(input_ids=mb.input_ids[:, p:], attention_mask=mb.attention_mask, past_key_values=cache,
                            position_ids=positions, use_cache=True).last_hidden_state
        in_prompt = (mb.cols < p)[:, None]
        return torch.where(in_prompt, h_prompt[mb.cols.clamp(max=p - 1)], h_comp[mb.rows, (mb.cols - p).clamp(min=0)])

    @torch.no_grad()
    def logprobs(self, samples: list[Sample], base: bool = False, scale: float = 1.0) -> list[list[float]]:
        """Trainer log-probs of every completion token (no dropout; `base`: LoRA off; `scale`: the
        LoRA at that multiple of its scale, PEFT's rescale_adapter_scale); for the sync guard and tests."""
        from peft.helpers import rescale_adapter_scale

        validate_samples(samples, self.vocab_size)
        rows = []
        for s in samples:
            full = Sample(s.prompt_ids, s.completion_ids, [], 0.0, "", None, False, temperature=s.temperature)
            rows.append(make_row(full, 0.0, False))
        out: list[list[float]] = [[] for _ in samples]
        kept = [(i, row) for i, row in enumerate(rows) if row is not None]
        budget = self.cfg.micro_batch_tokens
        # Rows are batched as the trainer packs them (length-sorted groups); length_groups gives
        # the same grouping pack uses, so each group's flat log-probs split back row by row.
        groups = length_groups([row for _, row in kept], budget)
        index = {id(row): i for i, row in kept}
        was_training = self.model.training
        self.model.eval()
        try:
            with (self.model.disable_adapter() if base else rescale_adapter_scale(self.model, scale) if scale != 1.0
                  else contextlib.nullcontext()):
                for group in groups:
                    (mb,) = pack(group, 1 << 62, self._pad_id, self.device)
                    flat = self._token_logprobs(mb)[0].tolist()
                    for row in group:
                        out[index[id(row)]], flat = flat[: len(row.positions)], flat[len(row.positions):]
        finally:
            self.model.train(was_training)
        return out

    # ----------------------------------------------------------------- training
    def step(self, samples: list[Sample]) -> dict[str, float]:
        """One GRPO step (cfg.updates_per_step optimizer updates) on `samples`; returns metrics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        validate_samples(samples, self.vocab_size)
        adv, used, skipped = group_advantages(samples, cfg.scale_std, cfg.min_reward_std)
        rows = [r for s, a in zip(samples, adv) if a is not None and (r := make_row(s, a, cfg.mask_truncated))]
        n_tokens = sum(len(r.positions) for r in rows)
        metrics: dict[str, float] = {
            "loss": 0.0, "groups_used": float(used), "groups_skipped": float(skipped), "logprob_gap": 0.0,
            "grad_norm": 0.0, "tokens": float(n_tokens), "sequences": float(len(rows)), "samples": float(len(samples)),
            "reward_mean": sum(float(s.reward) for s in samples) / max(len(samples), 1),
            "adv_abs_mean": 0.0, "clip_frac": 0.0, "is_weight_mean": 1.0, "is_capped_frac": 0.0,
            "kl": 0.0, "entropy": 0.0, "updates": 0.0, "ratio_dev": 0.0,
        }
        self.step_count += 1
        if not rows:  # nothing to learn from: leave parameters and optimizer state untouched
            metrics["time_s"] = time.perf_counter() - t0
            return metrics
        # Normalised over ALL ranks' rows, so the summed gradients equal one process's gradient.
        denom = float(n_tokens) if cfg.loss_agg == "token" else float(len(rows) * cfg.max_completion_tokens)
        if self.ranks.world > 1:
            rows = share_rows(rows, self.ranks.rank, self.ranks.world)
            metrics["rank_tokens"] = float(sum(len(r.positions) for r in rows))
            seed_key = np.random.SeedSequence([self.seed, self.step_count, self.ranks.rank])
            torch.manual_seed(int(seed_key.generate_state(1)[0]))  # dropout draws keyed by (seed, step, rank)
        batches = pack(rows, cfg.micro_batch_tokens, self._pad_id, self.device,
                        share_prompt=cfg.share_prompt and not cfg.gradient_checkpointing) if rows else []

        old_lp: list[torch.Tensor | None] = [None] * len(batches)
        ref_lp: list[torch.Tensor | None] = [None] * len(batches)
        # With LoRA dropout, lp_old and every update draw the same dropout masks (the RNG is rewound
        # to here), so the first update's ratio is exactly 1 and later ones move only with the weights.
        masks = _rng_state() if cfg.lora_dropout > 0 else None
        with torch.no_grad():
            if cfg.updates_per_step > 1:  # the policy moves between updates: freeze lp_old first
                old_lp = [self._token_logprobs(mb)[0] for mb in batches]
            if cfg.kl_coef > 0:
                self.model.eval()
                with self.model.disable_adapter():
                    ref_lp = [self._token_logprobs(mb)[0] for mb in batches]
                self.model.train()

        sums: dict[str, float] = defaultdict(float)
        for update in range(cfg.updates_per_step):
            if masks is not None:
                _set_rng_state(masks)
            self.optimizer.zero_grad(set_to_none=True)
            loss_total = 0.0
            for k, mb in enumerate(batches):
                lp, ent = self._token_logprobs(mb)
                old = old_lp[k] if old_lp[k] is not None else lp.detach()
                a = mb.advantages
                ratio = torch.exp(lp - old)
                surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - cfg.eps_low, 1 + cfg.eps_high) * a)
                known = ~torch.isnan(mb.sampler_lp)
                if cfg.is_cap is not None:
                    raw_w = torch.exp(old - torch.nan_to_num(mb.sampler_lp, nan=0.0))
                    w = torch.where(known, torch.clamp(raw_w, max=cfg.is_cap), torch.ones_like(old))
                else:
                    w = torch.ones_like(old)
                per_token = -w * surrogate
                if cfg.kl_coef > 0:
                    d = ref_lp[k] - lp
                    k3 = torch.exp(d) - d - 1
                    per_token = per_token + cfg.kl_coef * k3
                contribution = per_token.sum() / denom
                contribution.backward()
                loss_total += contribution.item()
                with torch.no_grad():  # clipping can only happen after the first update: count all
                    clipped = ((ratio < 1 - cfg.eps_low) & (a < 0)) | ((ratio > 1 + cfg.eps_high) & (a > 0))
                    sums["clip"] += clipped.float().sum().item()
                if update == 0:
                    with torch.no_grad():
                        sums["ratio_dev"] = max(sums["ratio_dev"], (ratio - 1).abs().max().item())
                        sums["gap"] += (old - mb.sampler_lp)[known].abs().sum().item()
                        sums["known"] += known.sum().item()
                        sums["w"] += w.sum().item()
                        if cfg.is_cap is not None:
                            sums["capped"] += (known & (raw_w > cfg.is_cap)).sum().item()
                        sums["entropy"] += ent.sum().item()
                        sums["adv"] += a.abs().sum().item()
                        if cfg.kl_coef > 0:
                            sums["kl"] += k3.detach().sum().item()
            loss_total = self._sum_over_ranks(loss_total)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            if not torch.isfinite(grad_norm):  # one bad batch must not turn the adapter into NaNs
                log.warning("non-finite gradient norm at step %d; update skipped", self.step_count)
                metrics["nonfinite_updates"] = metrics.get("nonfinite_updates", 0.0) + 1
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.optimizer.step()
            if update == 0:
                metrics["loss"] = loss_total
                metrics["grad_norm"] = float(grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ranks.world > 1:
            keys = ("clip", "gap", "known", "w", "capped", "entropy", "adv", "kl")
            total = self.ranks.sum_(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device))
            sums.update(zip(keys, total.tolist()))

        metrics.update(
            updates=float(cfg.updates_per_step),
            clip_frac=sums["clip"] / (n_tokens * cfg.updates_per_step),
            logprob_gap=sums["gap"] / sums["known"] if sums["known"] else 0.0,
            is_weight_mean=sums["w"] / n_tokens,
            is_capped_frac=sums["capped"] / sums["known"] if sums["known"] else 0.0,
            entropy=sums["entropy"] / n_tokens,
            adv_abs_mean=sums["adv"] / n_tokens,
            kl=sums["kl"] / n_tokens,
            ratio_dev=sums["ratio_dev"],  # max |ratio - 1| of the first update: 0 when lp_old is consistent
            time_s=time.perf_counter() - t0,
        )
        return metrics

    def _sum_over_ranks(self, loss: float) -> float:
        """Sum this update's LoRA gradients (and loss) over the ranks in one collective; no-op on one rank."""
        if self.ranks.world == 1:
            return loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.tensor([loss], device=self.device)])
        self.ranks.sum_(flat)
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
        return float(flat[-1])

    # ----------------------------------------------------------------- persistence
    def export_adapter(self, path: Path) -> Path:
        """Write the LoRA as a llama.cpp GGUF adapter (atomically, by export.write_lora_gguf)."""
        from .export import write_lora_gguf

        return write_lora_gguf(self.model, Path(path))

    def _save_embeddings(self) -> bool | str:
        """PEFT's save_embedding_layers: False unless an embedding layer is a LoRA target. PEFT's "auto"
        otherwise probes the base model's config (a warning per save for a model built from a GGUF, and
        a hub lookup) only to learn whether the vocabulary grew, which training here never does."""
        from peft.utils.constants import EMBEDDING_LAYER_NAMES

        targeted = any(name in EMBEDDING_LAYER_NAMES for name in self.cfg.target_modules)
        return "auto" if targeted else False

    def export_peft_adapter(self, directory: Path) -> Path:
        """Write the LoRA in PEFT format (adapter_config.json + safetensors), as servers such as
        vLLM load it at runtime; written to a hidden temp dir, then renamed into place."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.model.save_pretrained(str(tmp), save_embedding_layers=self._save_embeddings())
        return directory

    def save_state(self, directory: Path) -> None:
        """Adapter weights (PEFT format) + optimizer + step + RNG, written atomically, for exact resume."""
        with atomic_dir(Path(directory)) as tmp:
            self.model.save_pretrained(str(tmp / _ADAPTER_DIR), save_embedding_layers=self._save_embeddings())
            state = {
                "format": _STATE_FORMAT,
                "step": self.step_count,
                "seed": self.seed,
                "config": self.cfg.model_dump(),
                "optimizer": self.optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
            torch.save(state, tmp / _STATE_FILE)

    def load_state(self, directory: Path) -> None:
        """Restore what save_state wrote; the next step then matches an uninterrupted run exactly."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(directory)
        state_file = directory / _STATE_FILE
        weights = directory / _ADAPTER_DIR / "adapter_model.safetensors"
        if not state_file.is_file() or not weights.is_file():
            raise MinisirError(f"trainer state: {directory} lacks {_STATE_FILE} or {_ADAPTER_DIR}/; start a fresh run")
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        for name in _SHAPE_FIELDS:
            saved, now = state["config"].get(name), getattr(self.cfg, name)
            if saved != now:
                raise RecipeError(
                    f"trainer.{name}: the saved state in {directory} used {saved!r}, the recipe says {now!r}; "
                    "restore the setting or start a fresh run"
                )
        result = set_peft_model_state_dict(self.model, load_file(str(weights), device=str(self.device)))
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise MinisirError(f"trainer state: {weights} lacks {len(missing)} LoRA tensors (e.g. {missing[0]})")
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the recipe's values win over the saved ones
            group["lr"], group["weight_decay"] = self.cfg.learning_rate, self.cfg.weight_decay
        self.step_count = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
