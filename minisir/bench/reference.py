"""The reference GRPO step: the oracle the fast trainer is checked against.

full_logits_grpo_step is the plain way to write minisir's GRPO loss: materialise the full
(B, T, vocab) logits, log_softmax everywhere, gather the chosen tokens. It is slow and
memory-hungry on purpose, and obviously right. minisir.trainer.GRPOTrainer (chunked
chosen-token log-probs, shared prompts) must give the same loss and the same LoRA update
from the same init: tests/test_bench.py checks that, and `minisir bench train` reports
first_loss_abs_diff beside the speedup. It is also the update of the PEFT baseline
(baselines.peft_update). Change the trainer's loss, change this too.
"""

from __future__ import annotations


def full_logits_grpo_step(model, optimizer, params, samples: list, cfg, pad_id: int = 0) -> dict[str, float]:
    """The GRPO step a user would write without minisir: full (B, T, vocab) logits.

    Same loss as minisir.trainer with its defaults (token-level DAPO, asymmetric clip,
    truncated importance weight vs the sampler, no KL): pad the batch, run the model,
    log_softmax over the whole vocabulary at every position, gather the chosen tokens.
    """
    import torch

    from ..trainer import group_advantages

    adv, _, _ = group_advantages(samples, cfg.scale_std)
    rows = [(s, a) for s, a in zip(samples, adv)
            if a is not None and not (s.truncated and cfg.mask_truncated)]
    if not rows:
        return {"loss": 0.0, "tokens": 0.0}
    device = next(model.parameters()).device
    width = max(len(s.prompt_ids) + len(s.completion_ids) for s, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    mask = torch.zeros((len(rows), width - 1))
    slp = torch.zeros((len(rows), width - 1))
    known = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for b, (s, _) in enumerate(rows):
        seq = list(s.prompt_ids) + list(s.completion_ids)
        ids[b, : len(seq)] = torch.tensor(seq)
        att[b, : len(seq)] = 1
        p, m = len(s.prompt_ids), len(s.completion_ids)
        keep = torch.tensor(s.loss_mask if s.loss_mask is not None else [1] * m, dtype=torch.float32)
        mask[b, p - 1 : p - 1 + m] = keep
        if s.sampler_logprobs:
            slp[b, p - 1 : p - 1 + m] = torch.tensor(s.sampler_logprobs)
            known[b, p - 1 : p - 1 + m] = True
    ids, att, mask, slp, known = (t.to(device) for t in (ids, att, mask, slp, known))
    a = torch.tensor([a for _, a in rows], dtype=torch.float32, device=device)[:, None]

    optimizer.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, attention_mask=att).logits  # (B, T, vocab)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    old = lp.detach()
    ratio = torch.exp(lp - old)
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - cfg.eps_low, 1 + cfg.eps_high) * a)
    if cfg.is_cap is not None:
        w = torch.where(known, torch.clamp(torch.exp(old - slp), max=cfg.is_cap), torch.ones_like(old))
    else:
        w = torch.ones_like(old)
    n_tokens = mask.sum()
    loss = (-w * surrogate * mask).sum() / n_tokens
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "tokens": float(n_tokens)}
