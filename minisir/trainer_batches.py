"""From GRPO samples to the trainer's micro-batches: checked samples, the rows the forward pass
needs (trained positions, targets, the sampler's log-probs, advantages), each rank's share of them,
and length-sorted packing under a padded-token budget (a GRPO group's prompt shared once)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .errors import MinisirError
from .grpo import Sample

log = logging.getLogger(__name__)


@dataclass
class Row:
    """A sample reduced to what the forward pass needs."""

    input_ids: list[int]  # prompt + completion up to the last trained token (exclusive)
    positions: list[int]  # input positions whose next token is a trained completion token
    targets: list[int]
    sampler_lp: list[float]  # nan where unknown
    advantage: float
    prompt_len: int = 0
    temperature: float = 1.0


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (B, T) right padded
    attention_mask: torch.Tensor  # (B, T)
    rows: torch.Tensor  # (N,) batch index of each trained token
    cols: torch.Tensor  # (N,) position of each trained token's prediction
    targets: torch.Tensor  # (N,)
    advantages: torch.Tensor  # (N,) float32
    sampler_lp: torch.Tensor  # (N,) float32, nan = unknown
    inv_temp: torch.Tensor  # (N,) float32, 1 / the sampling temperature of each trained token's row
    shared_prompt: int = 0  # > 0: every row starts with the same this-many prompt tokens


def validate_samples(samples: list[Sample], vocab_size: int) -> None:
    for n, s in enumerate(samples):
        m = len(s.completion_ids)
        if not s.prompt_ids:
            raise ValueError(f"sample {n}: prompt_ids is empty (it must hold at least the BOS token)")
        if s.sampler_logprobs and len(s.sampler_logprobs) != m:
            raise ValueError(f"sample {n}: {len(s.sampler_logprobs)} sampler_logprobs for {m} completion tokens")
        if s.loss_mask is not None and len(s.loss_mask) != m:
            raise ValueError(f"sample {n}: loss_mask has {len(s.loss_mask)} entries for {m} completion tokens")
        if not math.isfinite(float(s.reward)):
            raise ValueError(f"sample {n}: reward {s.reward} is not finite")
        if not (math.isfinite(float(s.temperature)) and s.temperature > 0):
            raise ValueError(f"sample {n}: temperature {s.temperature} must be > 0 (greedy samples are scored at 1)")
        ids = list(s.prompt_ids) + list(s.completion_ids)
        if ids and (min(ids) < 0 or max(ids) >= vocab_size):
            raise MinisirError(
                f"sample {n}: token id {max(ids)} outside the trainer model's vocabulary ({vocab_size}); "
                "model.hf_dir must be the same model as model.gguf"
            )


def make_row(s: Sample, advantage: float, mask_truncated: bool) -> Row | None:
    mask = list(s.loss_mask) if s.loss_mask is not None else [1] * len(s.completion_ids)
    if s.truncated and mask_truncated:
        return None
    trained = [j for j, keep in enumerate(mask) if keep]
    if not trained:
        return None
    p = len(s.prompt_ids)
    seq = list(s.prompt_ids) + list(s.completion_ids)
    # Completion token j sits at seq[p + j] and is predicted from position p + j - 1.
    last = trained[-1]
    lps = s.sampler_logprobs
    return Row(
        input_ids=seq[: p + last],
        positions=[p + j - 1 for j in trained],
        targets=[s.completion_ids[j] for j in trained],
        sampler_lp=[float(lps[j]) if lps else math.nan for j in trained],
        advantage=advantage,
        prompt_len=p,
        temperature=float(s.temperature),
    )


def share_rows(rows: list[Row], rank: int, world: int) -> list[Row]:
    """Rank `rank`'s rows: longest first to the rank with the fewest tokens so far (the same
    deterministic split on every rank, so together the ranks train on every row exactly once)."""
    load = [0] * world
    mine = []
    for i in sorted(range(len(rows)), key=lambda i: (-len(rows[i].positions), i)):
        r = min(range(world), key=lambda k: (load[k], k))
        load[r] += len(rows[i].positions)
        if r == rank:
            mine.append(rows[i])
    return mine


def pack(rows: list[Row], budget: int, pad_id: int, device: torch.device,
          share_prompt: bool = False) -> list[MicroBatch]:
    """Greedy length-sorted packing: each micro-batch holds <= budget padded tokens (one row may exceed it).

    share_prompt: rows with the same prompt (a GRPO group) are packed together, so their
    prompt is forwarded once per micro-batch instead of once per completion.
    """
    if share_prompt:
        by_prompt: dict[tuple[int, ...], list[Row]] = {}
        for row in rows:
            by_prompt.setdefault(tuple(row.input_ids[: row.prompt_len]), []).append(row)
        out = []
        for prompt, members in by_prompt.items():
            batches = pack(members, budget, pad_id, device)
            for mb, n in zip(batches, group_sizes(members, budget)):
                # the last prompt token must be an input (it predicts the first completion token)
                mb.shared_prompt = len(prompt) if n > 1 else 0
            out += batches
        return out
    groups = length_groups(rows, budget)
    batches = []
    for group in groups:
        width = len(group[0].input_ids)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(group), width), dtype=torch.long)
        rws, cols, tgts, advs, slps, invt = [], [], [], [], [], []
        for b, row in enumerate(group):
            ids[b, : len(row.input_ids)] = torch.tensor(row.input_ids, dtype=torch.long)
            att[b, : len(row.input_ids)] = 1
            rws += [b] * len(row.positions)
            cols += row.positions
            tgts += row.targets
            advs += [row.advantage] * len(row.positions)
            slps += row.sampler_lp
            invt += [1.0 / row.temperature] * len(row.positions)
        batches.append(
            MicroBatch(
                input_ids=ids.to(device),
                attention_mask=att.to(device),
                rows=torch.tensor(rws, dtype=torch.long, device=device),
                cols=torch.tensor(cols, dtype=torch.long, device=device),
                targets=torch.tensor(tgts, dtype=torch.long, device=device),
                advantages=torch.tensor(advs, dtype=torch.float32, device=device),
                sampler_lp=torch.tensor(slps, dtype=torch.float32, device=device),
                inv_temp=torch.tensor(invt, dtype=torch.float32, device=device),
            )
        )
    return batches


def length_groups(rows: list[Row], budget: int) -> list[list[Row]]:
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].input_ids))
    groups: list[list[Row]] = []
    for i in order:
        row = rows[i]
        if groups and (len(groups[-1]) + 1) * len(groups[-1][0].input_ids) <= budget:
            groups[-1].append(row)
        else:
            if len(row.input_ids) > budget:
                log.warning("a %d-token sequence exceeds micro_batch_tokens=%d; it runs alone", len(row.input_ids), budget)
            groups.append([row])
    return groups


def group_sizes(rows: list[Row], budget: int) -> list[int]:
    return [len(g) for g in length_groups(rows, budget)]
