"""GRPO trainer on a tiny random Gemma3 built here (real PEFT, real torch; no mocks)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from minisir.trainer import GRPOTrainer, Sample, TrainerConfig, group_advantages
from tiny_models import tiny_hf_dir

torch.set_num_threads(1)  # the machine's 2 cores are shared


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return lambda **kw: tiny_hf_dir(root, **{"init": 0.1, **kw})


def _trainer(model_dir: Path, seed: int = 0, **cfg) -> GRPOTrainer:
    cfg.setdefault("learning_rate", 1e-2)
    return GRPOTrainer(TrainerConfig(**cfg), None, hf_dir=model_dir, seed=seed)


def _batch(seed: int = 0, groups: int = 2, size: int = 4, vocab: int = 512, prompt_len: int = 3) -> list[Sample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(groups):
        prompt = [2] + torch.randint(3, vocab, (prompt_len + k,), generator=g).tolist()
        for j in range(size):
            n = 4 + (j % 3)
            comp = torch.randint(3, vocab, (n,), generator=g).tolist()
            lps = (-torch.rand(n, generator=g) * 3 - 4).tolist()
            out.append(Sample(prompt, comp, lps, reward=float(j % 2 + k), group=f"g{k}"))
    return out


def _lora(tr: GRPOTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}


def _grads(tr: GRPOTrainer, samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Run one step and capture the accumulated (pre-clipping) gradient of every LoRA tensor."""
    acc: dict[str, torch.Tensor] = {}
    handles = []
    for name, p in tr.model.named_parameters():
        if p.requires_grad:
            def hook(grad, name=name):
                acc[name] = acc.get(name, 0) + grad.detach().clone()
            handles.append(p.register_hook(hook))
    try:
        tr.step(samples)
    finally:
        for h in handles:
            h.remove()
    return acc


def _close(a: dict, b: dict, **tol) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], **tol) for k in a)


# --------------------------------------------------------------------------- config


def test_config_defaults_and_validation(models):
    """The defaults, through what a step does with them: a rank-16 LoRA (alpha 32) on every attention
    and MLP projection, advantages scaled by the group's std, groups under 0.02 reward std skipped,
    truncated completions masked, importance weights capped at 2, no KL, loss = sum / trained tokens."""
    cfg = TrainerConfig()
    adv, used, skipped = group_advantages(
        [Sample([2], [5], [], r, g) for r, g in [(0, "a"), (10, "a"), (0, "b"), (0.03, "b"), (0, "c"), (0.05, "c")]],
        cfg.scale_std, cfg.min_reward_std)
    assert adv == pytest.approx([-1.0, 1.0, None, None, -1.0, 1.0]) and (used, skipped) == (2, 1)

    tr = GRPOTrainer(TrainerConfig(learning_rate=1e-2), None, hf_dir=models(), seed=0)  # lr: the only change
    lora = {n[n.index("layers."):]: m for n, m in tr.model.named_modules() if hasattr(m, "lora_A")}
    layers = tr.model.get_base_model().config.num_hidden_layers
    want = {f"layers.{i}.{part}.{proj}" for i in range(layers) for part, proj in
            [("self_attn", p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")] +
            [("mlp", p) for p in ("gate_proj", "up_proj", "down_proj")]}
    assert set(lora) == want
    assert all(m.lora_A["default"].weight.shape[0] == 16 and m.scaling["default"] == 2.0 for m in lora.values())

    samples = _batch(seed=20)  # two groups of four, rewards [0, 1, 0, 1] (+1), completions of 4, 5, 6, 4 tokens
    for s, lp in zip(samples, tr.logprobs(samples)):
        s.sampler_logprobs = [v - 5.0 for v in lp]  # weight e^5, capped at 2
    samples[0].truncated = True  # masked: its 4 tokens drop out, its reward still counts in the group
    m = tr.step(samples)
    assert [len(s.completion_ids) for s in samples] == [4, 5, 6, 4] * 2
    assert m["tokens"] == 38 - 4 and m["sequences"] == 7
    assert m["is_weight_mean"] == pytest.approx(2.0) and m["is_capped_frac"] == 1.0 and m["kl"] == 0.0
    # loss = -sum(w * A * tokens) / trained tokens, A = -1, 1, -1, 1 in both groups (ratio 1: first update)
    assert m["loss"] == pytest.approx(-2.0 * ((5 - 6 + 4) + (-4 + 5 - 6 + 4)) / 34, rel=1e-5)
    for bad in ({"lora_rank": 0}, {"eps_low": 1.5}, {"loss_agg": "seq"}, {"is_cap": 0.5}, {"bogus": 1}):
        with pytest.raises(pydantic.ValidationError):
            TrainerConfig(**bad)


def test_group_advantages_skip_flat_groups():
    s = [Sample([2], [5], [], r, g) for r, g in [(1, "a"), (0, "a"), (3, "b"), (3, "b"), (7, "c")]]
    adv, used, skipped = group_advantages(s, scale_std=True)
    assert (used, skipped) == (1, 2)
    assert adv[0] == pytest.approx(1.0) and adv[1] == pytest.approx(-1.0)
    assert adv[2:] == [None, None, None]
    adv, _, _ = group_advantages(s, scale_std=False)
    assert adv[0] == pytest.approx(0.5)


# --------------------------------------------------------------------------- log-probs


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_logprobs_match_full_logits(models, softcap):
    tr = _trainer(models(softcap=softcap), logprob_chunk=3)
    samples = _batch(seed=1)
    chunked = tr.logprobs(samples)
    tr.model.eval()
    with torch.no_grad():
        for s, got in zip(samples, chunked):
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = tr.model(input_ids=ids).logits[0].float()  # HF applies the softcap itself
            full = torch.log_softmax(logits, -1)
            p = len(s.prompt_ids)
            want = [full[p + j - 1, t].item() for j, t in enumerate(s.completion_ids)]
            assert got == pytest.approx(want, abs=1e-5)
    # the softcap really matters for this model, so the test would catch ignoring it
    if softcap:
        tr._softcap = None
        assert tr.logprobs(samples[:1])[0] != pytest.approx(chunked[0], abs=1e-3)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_fast_head_gradient_matches_autograd(models, softcap):
    """The custom lm_head backward (no logits recompute) equals plain autograd through the logits."""
    samples = _batch(seed=17)
    fast = _trainer(models(softcap=softcap))
    slow = _trainer(models(softcap=softcap))
    assert fast._fast_head
    slow._fast_head = False  # checkpointed autograd path
    g_fast, g_slow = _grads(fast, samples), _grads(slow, samples)
    assert _close(g_fast, g_slow, rtol=1e-4, atol=1e-7)
    assert any(v.abs().max() > 0 for v in g_fast.values())


def test_logprob_gap_and_importance_weight_metrics(models):
    tr = _trainer(models())
    samples = _batch(seed=2)
    own = tr.logprobs(samples)
    for s, lp in zip(samples, own):
        s.sampler_logprobs = [v + 0.5 for v in lp]  # sampler thinks every token is e^0.5 likelier
    m = tr.step(samples)
    assert m["logprob_gap"] == pytest.approx(0.5, abs=1e-4)
    assert m["is_weight_mean"] == pytest.approx(math.exp(-0.5), abs=1e-4)
    assert m["is_capped_frac"] == 0.0


# --------------------------------------------------------------------------- loss options


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"loss_agg": "drgrpo", "max_completion_tokens": 8},
        {"updates_per_step": 2},
        {"gradient_checkpointing": True, "lora_dropout": 0.1},
        {"micro_batch_tokens": 16, "logprob_chunk": 2},
        {"dtype": "bfloat16", "kl_coef": 0.1},  # the GPU dtype; LoRA weights stay float32 (PEFT)
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults",
)
def test_loss_options_run_and_are_finite(models, options):
    """Options that change how the step is computed (not what it optimises) still train: every metric
    finite, both groups and all 38 tokens trained, the LoRA moved and stayed float32. What is_cap,
    scale_std and kl_coef change is checked by the tests below, drgrpo by test_drgrpo_normaliser_is_constant."""
    tr = _trainer(models(), **options)
    before = _lora(tr)
    for seed in (3, 4):
        batch = _batch(seed=seed)
        m = tr.step(batch)
        assert all(math.isfinite(v) for v in m.values()), m
        assert m["groups_used"] == 2 and m["tokens"] == sum(len(s.completion_ids) for s in batch) == 38
        assert m["grad_norm"] > 0 and m["updates"] == options.get("updates_per_step", 1)
    after = _lora(tr)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if options.get("kl_coef"):
        assert m["kl"] > 0  # after one update the LoRA policy differs from the base


def _with(samples: list[Sample], reward_factor: float = 1.0, sampler_shift: list[list[float]] | None = None,
          shift: float = 0.0) -> list[Sample]:
    """Copies of `samples` with rewards scaled and/or sampler log-probs set to `sampler_shift` + shift."""
    out = [Sample(**vars(s)) for s in samples]
    for i, s in enumerate(out):
        s.reward = s.reward * reward_factor
        if sampler_shift is not None:
            s.sampler_logprobs = [v + shift for v in sampler_shift[i]]
    return out


def _scaled(g: dict, factor: float) -> dict:
    return {k: v * factor for k, v in g.items()}


def _same(a: dict, b: dict, rel: float = 1e-4) -> bool:
    """Equal up to float rounding, tensor by tensor: ||a - b|| <= rel * ||b|| (entries near zero
    cancel in float32, so an element-wise rtol would judge rounding rather than the claim)."""
    return a.keys() == b.keys() and all(float((a[k] - b[k]).norm()) <= rel * float(b[k].norm()) + 1e-12 for k in a)


def test_is_cap_weights_each_token_by_the_capped_trainer_sampler_ratio(models):
    """w = min(exp(lp_trainer - lp_sampler), is_cap); is_cap=None means w = 1. The first update's
    gradient is linear in w, so a token the sampler underrated by e^10 gets exactly is_cap times the
    uncorrected gradient, and one it overrated by e^1 gets e^-1 times it, whatever the cap."""
    samples = _batch(seed=3)
    own = _trainer(models()).logprobs(samples)

    def grads(cap, shift):
        return _grads(_trainer(models(), is_cap=cap), _with(samples, sampler_shift=own, shift=shift))

    plain = grads(None, -10.0)
    assert any(v.abs().max() > 0 for v in plain.values())
    assert _same(grads(None, 1.0), plain)  # no correction: the sampler is ignored
    assert _same(grads(2.0, -10.0), _scaled(plain, 2.0))  # capped at 2
    assert _same(grads(1.0, -10.0), plain)  # capped at 1
    assert _same(grads(1.0, 1.0), _scaled(plain, math.exp(-1.0)))  # below the cap
    assert not _same(grads(2.0, -10.0), plain, rel=0.5)  # the comparisons above can fail
    m = _trainer(models(), is_cap=2.0).step(_with(samples, sampler_shift=own, shift=-10.0))
    assert m["is_weight_mean"] == pytest.approx(2.0) and m["is_capped_frac"] == 1.0
    m = _trainer(models(), is_cap=None).step(_with(samples, sampler_shift=own, shift=-10.0))
    assert m["is_weight_mean"] == 1.0 and m["is_capped_frac"] == 0.0


def test_scale_std_divides_advantages_by_the_group_std(models):
    """scale_std: advantages (r - mean) / std, so the gradient ignores the rewards' scale; without it
    rewards spread 10x give a 10x gradient. _batch's groups have reward std 0.5."""
    samples = _batch(seed=3)

    def run(scale_std, factor):
        tr = _trainer(models(), scale_std=scale_std)
        acc: dict = {}
        handles = [p.register_hook(lambda g, n=n: acc.__setitem__(n, acc.get(n, 0) + g.detach().clone()))
                   for n, p in tr.model.named_parameters() if p.requires_grad]
        m = tr.step(_with(samples, reward_factor=factor))
        for h in handles:
            h.remove()
        return acc, m

    std1, m_std1 = run(True, 1.0)
    std10, m_std10 = run(True, 10.0)
    raw1, m_raw1 = run(False, 1.0)
    raw10, m_raw10 = run(False, 10.0)
    assert _same(std10, std1)
    assert m_std10["grad_norm"] == pytest.approx(m_std1["grad_norm"], rel=1e-4)
    assert _same(raw10, _scaled(raw1, 10.0))
    assert m_raw10["grad_norm"] == pytest.approx(10 * m_raw1["grad_norm"], rel=1e-4)
    assert _same(raw1, _scaled(std1, 0.5))  # dividing by std 0.5 doubles it
    assert m_std1["adv_abs_mean"] == pytest.approx(1.0) and m_raw10["adv_abs_mean"] == pytest.approx(5.0)


def _lora_delta_norm(tr: GRPOTrainer) -> float:
    """|| scale * B @ A || over every LoRA layer: how far the adapter moved the model from the base."""
    total = 0.0
    for module in tr.model.modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            total += float((b @ a * module.scaling["default"]).pow(2).sum())
    return math.sqrt(total)


def test_kl_coef_pulls_the_lora_back_to_the_base(models):
    """k3 KL to the base: 0 on the first step (B = 0: the policy is the base), > 0 once the LoRA moved,
    and a larger coefficient keeps the policy nearer the base over six steps on the same data:
    lower reported KL and a smaller LoRA delta than without the term."""
    samples = _batch(seed=3)
    runs = {}
    for coef in (0.0, 1e-3, 1.0):
        tr = _trainer(models(), kl_coef=coef)
        runs[coef] = ([tr.step(samples)["kl"] for _ in range(6)], _lora_delta_norm(tr))
    (kl_off, drift_off), (kl_weak, drift_weak), (kl_strong, drift_strong) = runs[0.0], runs[1e-3], runs[1.0]
    assert kl_off == [0.0] * 6  # not computed without the term
    assert kl_weak[0] == pytest.approx(0.0, abs=1e-7) and kl_strong[0] == pytest.approx(0.0, abs=1e-7)
    assert kl_weak[1] > 0 and kl_strong[1] > 0
    assert kl_strong[-1] < 0.5 * kl_weak[-1], (kl_weak, kl_strong)
    assert drift_strong < 0.8 * drift_off and drift_weak > drift_strong, (drift_off, drift_weak, drift_strong)


def test_several_updates_per_step_clip_against_the_frozen_old_policy(models):
    tr = _trainer(models(), updates_per_step=4, learning_rate=0.2)
    m = tr.step(_batch(seed=16))
    assert m["clip_frac"] > 0  # lp_old stays fixed while the policy moves away from it
    assert _trainer(models(), learning_rate=0.2).step(_batch(seed=16))["clip_frac"] == 0  # one update: ratio == 1


def test_drgrpo_normaliser_is_constant(models):
    samples = _batch(seed=5)
    for s, lp in zip(samples, _trainer(models()).logprobs(samples)):
        s.sampler_logprobs = [v - 1.0 for v in lp]  # every weight is min(e^1, 2) = 2: capped
    tok = _trainer(models()).step(samples)
    dr = _trainer(models(), loss_agg="drgrpo", max_completion_tokens=100).step(samples)
    # first update: ratio == 1, so loss = -sum(w * A) / normaliser; only the normaliser differs
    assert dr["loss"] * dr["sequences"] * 100 == pytest.approx(tok["loss"] * tok["tokens"], rel=1e-4, abs=1e-6)
    assert tok["is_capped_frac"] == 1.0


def test_micro_batching_does_not_change_the_gradient(models):
    samples = _batch(seed=6)
    one = _grads(_trainer(models(), micro_batch_tokens=4096), samples)
    many = _grads(_trainer(models(), micro_batch_tokens=16, logprob_chunk=2), samples)
    assert _close(one, many, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- skipping and masking


def test_flat_groups_are_skipped_without_touching_parameters(models):
    tr = _trainer(models(), weight_decay=0.1)
    samples = _batch(seed=7)
    for s in samples:
        s.reward = 1.0 if s.group == "g0" else 0.0
    before = _lora(tr)
    m = tr.step(samples)
    assert (m["groups_used"], m["groups_skipped"], m["tokens"], m["loss"]) == (0, 2, 0, 0.0)
    assert _close(before, _lora(tr), rtol=0, atol=0)
    assert not tr.optimizer.state  # no optimizer step either (weight decay would move weights)


def test_masked_last_token_equals_dropping_it(models):
    base = _batch(seed=8)
    masked = [Sample(**vars(s)) for s in base]
    masked[0].loss_mask = [1] * (len(base[0].completion_ids) - 1) + [0]
    dropped = [Sample(**vars(s)) for s in base]
    dropped[0].completion_ids = base[0].completion_ids[:-1]
    dropped[0].sampler_logprobs = base[0].sampler_logprobs[:-1]
    g_masked = _grads(_trainer(models()), masked)
    g_dropped = _grads(_trainer(models()), dropped)
    g_full = _grads(_trainer(models()), base)
    assert _close(g_masked, g_dropped, rtol=1e-5, atol=1e-8)
    assert not _close(g_masked, g_full, rtol=1e-3, atol=1e-6)  # the test can fail: that token did matter


def test_masked_middle_token_gets_no_loss_term(models):
    def variant(mask: bool, sampler_lp: float) -> dict:
        samples = _batch(seed=9)
        s = samples[1]
        s.sampler_logprobs = list(s.sampler_logprobs)
        s.sampler_logprobs[2] = sampler_lp  # changes that token's importance weight, if it is trained
        if mask:
            s.loss_mask = [1, 1, 0] + [1] * (len(s.completion_ids) - 3)
        return _grads(_trainer(models()), samples)

    assert _close(variant(True, -3.0), variant(True, -30.0), rtol=1e-6, atol=1e-9)
    assert not _close(variant(False, -3.0), variant(False, -30.0), rtol=1e-3, atol=1e-6)


def test_truncated_completions_are_masked(models):
    samples = _batch(seed=10)
    samples[0].truncated = True
    n0 = len(samples[0].completion_ids)
    on = _trainer(models()).step(samples)
    off = _trainer(models(), mask_truncated=False).step(samples)
    assert off["tokens"] - on["tokens"] == n0
    assert off["sequences"] - on["sequences"] == 1


def test_bad_samples_are_rejected(models):
    tr = _trainer(models())
    s = _batch(seed=11)
    s[0].loss_mask = [1]
    with pytest.raises(ValueError, match="loss_mask"):
        tr.step(s)
    s = _batch(seed=11)
    s[0].completion_ids = s[0].completion_ids[:-1] + [10**6]
    with pytest.raises(Exception, match="vocabulary"):
        tr.step(s)


# --------------------------------------------------------------------------- learning signal


def test_grpo_learns_a_toy_reward_without_the_sampler(models):
    """Sample from the policy itself with torch; reward = how often token 5 appears; 30 steps."""
    target, groups, size, length = 5, 4, 8, 12
    tr = _trainer(models(vocab=64), learning_rate=2e-2, lora_rank=8, lora_alpha=16, max_completion_tokens=length)
    gen = torch.Generator().manual_seed(0)
    prompts = [[2, 10 + i, 20 + i] for i in range(groups)]
    history = []
    for _ in range(30):
        ids = torch.tensor([p for p in prompts for _ in range(size)])
        lps = []
        tr.model.eval()
        with torch.no_grad():
            for _ in range(length):
                lp = torch.log_softmax(tr.model(input_ids=ids).logits[:, -1].float(), -1)
                tok = torch.multinomial(lp.exp(), 1, generator=gen)
                lps.append(lp.gather(-1, tok))
                ids = torch.cat([ids, tok], 1)
        tr.model.train()
        lps = torch.cat(lps, 1).tolist()
        samples = [
            Sample(prompts[k // size], c, lp, float(c.count(target)), f"p{k // size}")
            for k, (c, lp) in enumerate(zip(ids[:, 3:].tolist(), lps))
        ]
        m = tr.step(samples)
        assert m["logprob_gap"] < 1e-4  # same model, same numerics
        history.append(m["reward_mean"])
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last > first + 3.0 and last > 2 * first, history


# --------------------------------------------------------------------------- persistence


def test_save_load_state_resumes_exactly(models, tmp_path):
    opts = {"lora_dropout": 0.2}  # dropout makes the step depend on the restored RNG
    a = _trainer(models(), seed=0, **opts)
    a.step(_batch(seed=12))
    a.save_state(tmp_path / "state")
    a.save_state(tmp_path / "state")  # overwriting an existing state works
    m_a = a.step(_batch(seed=13))
    m_a3 = a.step(_batch(seed=14))

    b = _trainer(models(), seed=99, **opts)  # different init: everything must come from the state
    b.load_state(tmp_path / "state")
    assert b.step_count == 1
    m_b = b.step(_batch(seed=13))
    m_b3 = b.step(_batch(seed=14))
    m_a.pop("time_s"), m_b.pop("time_s"), m_a3.pop("time_s"), m_b3.pop("time_s")
    assert m_a == m_b and m_a3 == m_b3
    assert _close(_lora(a), _lora(b), rtol=0, atol=0)

    c = _trainer(models(), lora_rank=4)
    with pytest.raises(Exception, match="lora_rank"):
        c.load_state(tmp_path / "state")
    assert not list(tmp_path.glob(".state*"))  # no temporary leftovers


def test_export_adapter_writes_gguf(models, tmp_path):
    """What llama.cpp needs to load the adapter, read back with gguf's own reader: an adapter-typed
    GGUF of the model's architecture, LoRA alpha, and for every PEFT layer blk.N.<tensor>.weight.lora_a
    (r x in) / .lora_b (out x r) in float32 with exactly the trained PEFT values."""
    import gguf

    tr = _trainer(models())
    tr.step(_batch(seed=15))
    out = tr.export_adapter(tmp_path / "adapter.gguf")
    assert out == tmp_path / "adapter.gguf" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter.gguf"]
    reader = gguf.GGUFReader(out)
    kv = {k: f.contents() for k, f in reader.fields.items()}
    assert kv["general.architecture"] == "gemma3" and kv["general.type"] == "adapter"
    assert kv["adapter.type"] == "lora" and kv["adapter.lora.alpha"] == 32.0

    # HF module -> llama.cpp tensor, written out by hand (llama.cpp's names for Gemma 3's blocks).
    gguf_name = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    want = {}
    for name, module in tr.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            layer, proj = name.split("layers.", 1)[1].split(".", 1)
            base = f"blk.{layer}.{gguf_name[proj]}.weight"
            want[base + ".lora_a"] = module.lora_A["default"].weight.detach().numpy()  # (r, in)
            want[base + ".lora_b"] = module.lora_B["default"].weight.detach().numpy()  # (out, r)
    assert len(want) == 2 * 7 * 2
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(want)
    for name, value in want.items():
        t = got[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert tuple(int(d) for d in t.shape) == value.shape[::-1]  # GGUF lists dimensions fastest first
        assert value.shape[0 if name.endswith("lora_a") else 1] == 16  # rank 16
        assert np.array_equal(np.asarray(t.data).reshape(value.shape), value), name
    assert any(np.abs(v).max() > 0 for k, v in want.items() if k.endswith("lora_b"))  # trained: B moved from 0


# --------------------------------------------------------------------------- the bundled model


@pytest.mark.slow
def test_load_bundled_gguf_converts_once_then_hits_cache(tmp_path, monkeypatch):
    from minisir import assets
    from minisir.hf_model import cached_checkpoint_dir, load_hf_model

    gguf = assets.bundled_model_path()
    monkeypatch.setenv("MINISIR_CACHE", str(tmp_path))  # a fresh cache: exercise the conversion
    first = load_hf_model(gguf)
    cache = cached_checkpoint_dir(gguf)
    assert cache.is_dir() and cache.parent.parent == tmp_path

    def files() -> dict:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.iterdir()}

    written = files()
    assert any(name.endswith(".safetensors") for name in written) and "config.json" in written
    second = load_hf_model(gguf)
    assert files() == written, "the second load read the cache; it did not convert again"
    assert type(second).__name__ == "Gemma3ForCausalLM" and second.config.vocab_size == 262144
    ids = torch.tensor([[2, 818, 5279, 529, 7001, 563]])
    with torch.no_grad():
        a, b = first(input_ids=ids).logits, second(input_ids=ids).logits
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert not list((tmp_path / "hf").glob(".tmp-*"))


@pytest.mark.parametrize("prompt_len", [3, 11])
def test_shared_prompt_forward_gives_the_full_forward_gradients(models, prompt_len):
    """A group's prompt forwarded once (KV cache repeated for each completion) must give the
    same log-probs and LoRA gradients as one full forward per completion, also when the
    sequences outrun the tiny model's 8-token sliding window, or the prompt alone does
    (prompt_len 11: the completions' window starts inside the shared prompt), and for a
    completion whose only trained token is its first (its hidden state comes from the prompt pass)."""
    samples = _batch(seed=21, groups=2, size=4, prompt_len=prompt_len)
    if prompt_len > 8:
        assert min(len(s.prompt_ids) for s in samples) > 8
    samples[0].completion_ids = samples[0].completion_ids[:1]
    samples[0].sampler_logprobs = samples[0].sampler_logprobs[:1]
    samples[5].loss_mask = [1, 0, 1, 0] + [1] * (len(samples[5].completion_ids) - 4)
    assert max(len(s.prompt_ids) + len(s.completion_ids) for s in samples) > 8
    shared, full = _trainer(models(), share_prompt=True), _trainer(models(), share_prompt=False)
    g_shared, g_full = _grads(shared, samples), _grads(full, samples)
    assert _close(g_shared, g_full, rtol=1e-4, atol=1e-7)
    assert any(v.abs().max() > 0 for v in g_shared.values())
    m_shared, m_full = shared.step(samples), full.step(samples)
    for key in ("loss", "logprob_gap", "entropy", "tokens", "sequences"):
        assert m_shared[key] == pytest.approx(m_full[key], rel=1e-4, abs=1e-6), key


def test_noise_floor_is_relative_to_the_reward_scale():
    """A continuous reward's wobble (diversity +-0.01 on a 3.1-point teacher reward) trains nothing;
    a real spread does, and the same wobble on a 0.05-point scale is a real spread."""
    from minisir.grpo import has_signal

    wobble = [1.50, 1.51, 1.49, 1.50]
    group = [Sample([2], [5], [], r, "t", reward_scale=3.1) for r in wobble]
    adv, used, skipped = group_advantages(group, scale_std=True, min_reward_std=0.02)
    assert (used, skipped) == (0, 1) and adv == [None] * 4
    adv, used, _ = group_advantages(group, scale_std=True, min_reward_std=0.0)
    assert used == 1 and max(abs(a) for a in adv) > 1.0  # without the floor, noise becomes +-1 advantages
    small = [Sample([2], [5], [], r, "t", reward_scale=0.05) for r in wobble]
    assert group_advantages(small, scale_std=True, min_reward_std=0.02)[1] == 1
    real = [Sample([2], [5], [], r, "t", reward_scale=3.1) for r in (0.2, 1.7, 0.3, 1.9)]
    assert group_advantages(real, scale_std=True, min_reward_std=0.02)[1] == 1
    assert not has_signal([1.0]) and not has_signal([2.0, 2.0]) and has_signal([0.0, 1.0], 0.4)
    assert not has_signal([0.0, 1.0], 0.6)  # std 0.5


@pytest.mark.parametrize("updates", [1, 3])
def test_with_lora_dropout_the_first_update_has_ratio_one(models, updates):
    """lp_old and the update see the same dropout masks: the first update's importance ratio is
    exactly 1 (it was not when lp_old was taken without dropout), and training still moves."""
    tr = _trainer(models(), updates_per_step=updates, lora_dropout=0.3, learning_rate=0.05)
    before = {k: v.clone() for k, v in _lora(tr).items()}
    m = tr.step(_batch(seed=21))
    assert m["ratio_dev"] < 1e-5, m["ratio_dev"]
    assert any(not torch.equal(before[k], v) for k, v in _lora(tr).items())


def test_saving_the_adapter_does_not_probe_the_base_models_vocabulary(models, tmp_path):
    """PEFT's default probes the base model's config.json (a hub lookup when it is not on disk, as for a
    model built from a GGUF) and warned on every step's save; the LoRA never trains embeddings."""
    import warnings

    tr = _trainer(models())
    tr.model.peft_config["default"].base_model_name_or_path = str(tmp_path / "a-gguf-dir")  # no config.json
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.save_state(tmp_path / "state")
        tr.export_peft_adapter(tmp_path / "peft")
    assert not [w for w in caught if "config file" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
