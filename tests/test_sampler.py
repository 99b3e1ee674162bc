"""The batched sampler on the real bundled model with real llama.cpp (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minisir.assets import bundled_model_path
from minisir.errors import ContextOverflow
from minisir.sampler import Sampler
from minisir.token_sampling import sample_rows

PROMPTS = [
    "Question: What is 7 times 8?\nAnswer:",
    "The three primary colours are",
    "def fibonacci(n):\n",
]


@pytest.fixture(scope="module")
def model() -> Path:
    return bundled_model_path()


@pytest.fixture(scope="module")
def sampler(model) -> Sampler:
    with Sampler(model, n_ctx=2048, n_parallel=4, n_threads=2) as s:
        yield s


def _ids(groups):
    return [[c.token_ids for c in g] for g in groups]


def test_greedy_batched_equals_one_at_a_time(model, sampler):
    batched = sampler.generate(PROMPTS, n=1, max_tokens=12, temperature=0)
    with Sampler(model, n_ctx=1024, n_parallel=1, n_threads=2) as single:
        one_by_one = [single.generate([p], n=1, max_tokens=12, temperature=0)[0] for p in PROMPTS]
    assert _ids(batched) == _ids(one_by_one)
    assert all(len(g[0].token_ids) > 0 for g in batched)


def test_same_seed_same_output_different_seed_differs(sampler):
    a = sampler.generate(PROMPTS[:2], n=3, max_tokens=10, temperature=1.0, seed=11)
    b = sampler.generate(PROMPTS[:2], n=3, max_tokens=10, temperature=1.0, seed=11)
    c = sampler.generate(PROMPTS[:2], n=3, max_tokens=10, temperature=1.0, seed=12)
    assert _ids(a) == _ids(b)
    assert _ids(a) != _ids(c)
    # samples of one prompt draw from their own streams, so they differ from each other
    assert len({tuple(x.token_ids) for x in a[0]}) > 1


def test_draws_do_not_depend_on_n_parallel(model, sampler):
    """Each completion draws from its own (seed, prompt, sample) stream, so how many run at
    once does not change the draws. The first token's logits come from the same prompt
    evaluation whatever n_parallel is, so first tokens and their log-probs must be equal;
    later tokens are decoded in batches of other sizes, whose CPU kernels give slightly
    other logits (see test_logprobs_match_a_separate_scoring_pass), so they may part."""
    kwargs = dict(n=4, max_tokens=4, temperature=1.0, top_p=1.0, seed=7)
    batched = sampler.generate(PROMPTS, **kwargs)
    with Sampler(model, n_ctx=1024, n_parallel=1, n_threads=2) as single:
        one_slot = single.generate(PROMPTS, **kwargs)
    firsts = [[c.token_ids[0] for c in g] for g in batched]
    assert firsts == [[c.token_ids[0] for c in g] for g in one_slot]
    assert [[c.logprobs[0] for c in g] for g in batched] == [[c.logprobs[0] for c in g] for g in one_slot]
    # sample j of a prompt keeps stream j: a stream that followed the schedule would shuffle these
    assert any(len(set(f)) > 1 for f in firsts)


def test_more_sequences_than_slots_all_complete_in_order(sampler):
    out = sampler.generate(PROMPTS, n=3, max_tokens=6, temperature=1.0, seed=5)
    assert [len(g) for g in out] == [3, 3, 3]
    for prompt, group in zip(PROMPTS, out):
        for c in group:
            assert c.prompt_ids == sampler.tokenize(prompt)
            assert 1 <= len(c.token_ids) <= 6
            assert len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0 for lp in c.logprobs)


def test_logprobs_match_a_separate_scoring_pass(sampler, model):
    with Sampler(model, n_ctx=1024, n_parallel=1, n_threads=2) as single:
        c = single.generate([PROMPTS[0]], n=1, max_tokens=16, temperature=1.0, seed=3)[0][0]
        exact = single.score(c.prompt_ids, c.token_ids)
        fast = single.score(c.prompt_ids, c.token_ids, stepwise=False)
    assert np.allclose(exact, c.logprobs, atol=1e-5)
    # one-batch scoring runs other quantised kernels: close, not identical
    assert np.mean(np.abs(np.array(fast) - c.logprobs)) < 0.2
    # batched decoding of several sequences: same tokens scored, small kernel differences
    group = sampler.generate([PROMPTS[1]], n=3, max_tokens=12, temperature=1.0, seed=4)[0]
    for c in group:
        scored = sampler.score(c.prompt_ids, c.token_ids)
        assert np.mean(np.abs(np.array(scored) - c.logprobs)) < 0.2


def test_max_tokens_and_stop_strings_end_sequences(sampler):
    long = sampler.generate([PROMPTS[1]], n=2, max_tokens=5, temperature=1.0, seed=1)[0]
    for c in long:
        if c.finish_reason == "length":
            assert len(c.token_ids) == 5
        else:  # an end-of-generation token came first
            assert sampler.is_eog(c.token_ids[-1])
    greedy = sampler.generate([PROMPTS[2]], n=1, max_tokens=40, temperature=0)[0][0]
    assert "\n" in greedy.text, "the greedy continuation of a function header spans lines"
    stopped = sampler.generate([PROMPTS[2]], n=1, max_tokens=40, temperature=0, stop=["\n"])[0][0]
    assert stopped.finish_reason == "stop"
    assert "\n" not in stopped.text
    assert greedy.text.startswith(stopped.text)
    assert len(stopped.token_ids) < len(greedy.token_ids)


def test_prompt_too_long_is_a_clear_error(sampler):
    with pytest.raises(ContextOverflow, match="exceeds the sampler context of 2048 tokens"):
        sampler.generate(["word " * 3000], n=1, max_tokens=8)


def _write_adapter(path: Path, model: Path, rank: int = 4, seed: int = 0) -> Path:
    """A random LoRA for two layers' attention and MLP, in llama.cpp's adapter format."""
    import gguf

    reader = gguf.GGUFReader(str(model))
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}  # ne order: (in, out)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for layer in (0, 1):
        for name in ("attn_q", "attn_v", "ffn_up"):
            n_in, n_out = shapes[f"blk.{layer}.{name}.weight"][:2]
            a = rng.normal(0, 0.05, (rank, n_in)).astype(np.float32)
            b = rng.normal(0, 0.05, (n_out, rank)).astype(np.float32)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_lora_changes_distribution_and_clearing_restores_it(sampler, model, tmp_path):
    c = sampler.generate([PROMPTS[0]], n=1, max_tokens=8, temperature=0)[0][0]
    base = sampler.score(c.prompt_ids, c.token_ids)
    sampler.set_adapter(_write_adapter(tmp_path / "a.gguf", model, seed=0))
    with_a = sampler.score(c.prompt_ids, c.token_ids)
    assert np.max(np.abs(np.array(with_a) - base)) > 1e-3
    sampler.set_adapter(_write_adapter(tmp_path / "b.gguf", model, seed=1))  # swap, no reload
    with_b = sampler.score(c.prompt_ids, c.token_ids)
    assert np.max(np.abs(np.array(with_b) - with_a)) > 1e-3
    sampler.set_adapter(tmp_path / "b.gguf", scale=0.0)
    assert np.allclose(sampler.score(c.prompt_ids, c.token_ids), base, atol=1e-5)
    sampler.clear_adapter()
    assert sampler.score(c.prompt_ids, c.token_ids) == base
    again = sampler.generate([PROMPTS[0]], n=1, max_tokens=8, temperature=0)[0][0]
    assert again.token_ids == c.token_ids


def test_sample_rows_greedy_and_distribution():
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=np.float32))
    toks, lps = sample_rows(logits, 0.0, 1.0, [None, None])
    assert toks.tolist() == [1, 0]
    assert np.allclose(lps, np.log([0.6, 0.5]), atol=1e-6)
    rngs = [np.random.default_rng(i) for i in range(4000)]
    drawn, _ = sample_rows(np.repeat(logits[:1], 4000, axis=0), 1.0, 1.0, rngs)
    freq = np.bincount(drawn, minlength=3) / 4000
    assert np.allclose(freq, [0.1, 0.6, 0.3], atol=0.03)
    nucleus, _ = sample_rows(np.repeat(logits[:1], 500, axis=0), 1.0, 0.5, rngs[:500])
    assert set(nucleus.tolist()) == {1}, "top-p 0.5 keeps only the 0.6 token"


def test_a_small_context_admits_sequences_as_cells_free_up(model):
    """256 cells cannot hold twelve 40-token sequences (plus prompts) at once, nor even the 8 slots'
    worth: sequences are admitted as finished ones free their cells, and every one of the twelve still
    runs to its end: max_tokens tokens ("length"), or an end-of-generation token ("stop", no stop
    strings here)."""
    live = []  # progress(k): tokens produced by one step = sequences that were live in it
    with Sampler(model, n_ctx=256, n_parallel=8, n_threads=2) as small:
        ids = [small.tokenize(p) for p in PROMPTS]
        assert sum(map(len, ids)) + 12 * 40 > small.n_ctx  # all at once would not fit
        out = small.generate(PROMPTS, n=4, max_tokens=40, temperature=1.0, seed=2, progress=live.append)
        assert [len(g) for g in out] == [4, 4, 4]
        for prompt_ids, group in zip(ids, out):
            for c in group:
                assert c.prompt_ids == prompt_ids and len(c.logprobs) == len(c.token_ids)
                assert all(np.isfinite(lp) and lp <= 0 for lp in c.logprobs)
                assert not any(small.is_eog(t) for t in c.token_ids[:-1])  # nothing after an end token
                if c.finish_reason == "length":
                    assert len(c.token_ids) == 40 and not small.is_eog(c.token_ids[-1])
                else:
                    assert c.finish_reason == "stop" and small.is_eog(c.token_ids[-1]) and len(c.token_ids) <= 40
                assert c.text == small.detokenize(c.token_ids)
    assert sum(live) == sum(len(c.token_ids) for g in out for c in g)  # every token came from a step
    # the cells, not the 8 slots, bounded how many sequences ran together
    assert 2 <= max(live) <= (small.n_ctx - min(map(len, ids))) // 40 < 8


def test_stop_string_tokens_are_cut_from_the_trained_ids(sampler):
    """The stop string is the sampler's, not the policy's: neither the text nor the token
    ids (which the trainer learns from) may hold it. The stop is taken from the model's own
    greedy output, so the test holds whatever this CPU's kernels sample."""
    free = sampler.generate([PROMPTS[0]], n=1, max_tokens=24, temperature=0)[0][0]
    text = free.text
    assert len(text) > 12, text
    stop = text[6:12]
    cut = sampler.generate([PROMPTS[0]], n=1, max_tokens=24, temperature=0, stop=[stop])[0][0]
    assert cut.text == text[: text.find(stop)] and cut.finish_reason == "stop"
    assert stop not in sampler.detokenize(cut.token_ids)
    assert len(cut.logprobs) == len(cut.token_ids) < len(free.token_ids)
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]
    assert text.startswith(sampler.detokenize(cut.token_ids))


FEW_SHOT = ("Answer each question with one number.\n" + "".join(
    f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n" for a, b in ((2, 3), (10, 4), (7, 7), (20, 5))))


def test_shared_prefix_is_evaluated_once_and_changes_nothing(sampler, monkeypatch):
    """Few-shot prompts share their examples: the prefix is decoded once per call, and the
    completions match a run that decodes every prompt in full (greedy: same tokens)."""
    import minisir.sampler as S

    prompts = [FEW_SHOT + f"Question: What is {a} plus 1?\nAnswer:" for a in (3, 5, 8)]
    ids = [sampler.tokenize(p) for p in prompts]
    common = S.shared_prefix(ids)
    assert common >= S.MIN_SHARED_PREFIX and all(x[:common] == ids[0][:common] for x in ids)
    before = sampler.prompt_tokens_evaluated
    shared = sampler.generate(prompts, n=2, max_tokens=6, temperature=0)
    assert sampler.prompt_tokens_evaluated - before == common + sum(len(x) - common for x in ids)

    monkeypatch.setattr(S, "MIN_SHARED_PREFIX", 10**9)  # no sharing: every prompt in full
    before = sampler.prompt_tokens_evaluated
    full = sampler.generate(prompts, n=2, max_tokens=6, temperature=0)
    assert sampler.prompt_tokens_evaluated - before == sum(len(x) for x in ids)
    assert _ids(shared) == _ids(full)
    # Quantised kernels give slightly different numbers for other batch shapes: changing only
    # n_parallel (1, 4, 6) moved these log-probs by up to 0.1 nats here. Sharing stays within that.
    diffs = np.abs(np.concatenate([np.subtract(a.logprobs, b.logprobs) for g_s, g_f in zip(shared, full)
                                   for a, b in zip(g_s, g_f)]))
    assert diffs.mean() < 0.05 and diffs.max() < 0.3, diffs


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    from minisir.sampler import MIN_SHARED_PREFIX, shared_prefix

    base = list(range(100, 100 + MIN_SHARED_PREFIX + 4))
    assert shared_prefix([base, base]) == len(base) - 1  # identical prompts: all but the last token
    assert shared_prefix([base + [1], base + [2]]) == len(base)
    assert shared_prefix([base]) == 0  # one prompt: nothing to share
    assert shared_prefix([base[:MIN_SHARED_PREFIX - 1] + [1], base[:MIN_SHARED_PREFIX - 1] + [2]]) == 0


def test_decode_counters_count_every_generation_step_of_every_sequence(sampler):
    """decode_rows counts each live sequence once per generation decode: every sampled token but a
    sequence's first (drawn from its prompt's logits) went through one. That is what the loop's
    batch occupancy (rows / calls / n_parallel) is made of; it holds whatever was sampled."""
    calls, rows = sampler.decode_calls, sampler.decode_rows
    out = sampler.generate(PROMPTS, n=3, max_tokens=6, temperature=1.0, seed=11)
    calls, rows = sampler.decode_calls - calls, sampler.decode_rows - rows
    assert rows == sum(len(c.token_ids) - 1 for g in out for c in g)
    assert rows / sampler.n_parallel <= calls <= rows


def _full_sort_nucleus(probs: np.ndarray, top_p: float, u: float) -> int:
    """The definition: sort every token (ties by id), keep the smallest prefix holding top_p."""
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order], dtype=np.float64)
    keep = min(int(np.searchsorted(cum, top_p * float(probs.sum(dtype=np.float64)), side="left")) + 1, len(cum))
    return int(order[min(int(np.searchsorted(cum[:keep], u * cum[keep - 1], side="right")), keep - 1)])


@pytest.mark.parametrize("shape", ["peaked", "flat", "partial-block", "ties", "tail-9", "tail-16"])
def test_nucleus_draws_exactly_what_a_full_sort_draws(shape):
    """The gathered-candidates nucleus must pick the very token the full-sort definition picks, for
    peaked rows (few candidates), flat rows, a vocabulary that is not a multiple of the block, tied
    top tokens, and one top token over a long tail whose mass the first floor (tail-9) or both floors
    (tail-16, top-p 0.999: the whole vocabulary) leave out."""
    gen = np.random.default_rng(5)
    v = 262_144 if shape != "partial-block" else 50_001
    logits = (gen.standard_normal((24, v)) * (0.01 if shape == "flat" else 2.0)).astype(np.float32)
    if shape in ("peaked", "partial-block"):
        logits[:, gen.integers(0, v, 40)] += 9.0
        logits[:, -1] += 12.0  # a top token in the last, partial block
    if shape == "ties":
        logits[:, [7, 70_000, 200_000]] = 20.0
        logits[:, [9, 90_000]] = 19.5
    if shape.startswith("tail"):
        logits = logits * 0.01 - float(shape[5:])
        logits[:, 3] = 0.0
    for temperature, top_p in ((0.6, 0.95), (1.0, 0.5), (1.0, 0.999)):
        rngs = [np.random.default_rng([shape.__len__(), i]) for i in range(len(logits))]
        toks, _ = sample_rows(logits, temperature, top_p, rngs)
        u = [np.random.default_rng([shape.__len__(), i]).random() for i in range(len(logits))]
        probs = np.exp((logits - logits.max(axis=1, keepdims=True)) / np.float32(temperature))
        assert toks.tolist() == [_full_sort_nucleus(p, top_p, x) for p, x in zip(probs, u)]


# ----------------------------------------------------------------------------- loops
LOOP = " = 16 + 15/4"  # 12 bytes: how the fixed stretch run's solvers looped (RESULTS.md, sixth sitting)


@pytest.mark.parametrize("text, loops", [
    ("Step:" + LOOP * 4, True),
    ("Step:" + LOOP * 3, False),  # three copies are not yet a loop
    (" 2 * (7/3 + 7/4) = 2 * 3 + 7/12 + 7/4 = 16 + 7/4 = 16 + 15/4" + " = 16 + 15/4" * 3, True),
    (" ab1" * 16, True),  # a short block counts once it fills 12 bytes 4 times
    ("-" * 200, False), ("|---" * 50, False), (" " * 200, False),  # fewer than 3 distinct bytes: no loop
    (" ".join(str(i) for i in range(1, 120)), False),  # counting never repeats a block
    # a right answer that repeats itself three times on the way (seen in the archive): not cut
    (" 2*2 + 2 * 2 = 4 + 2 * 2 = 4 + 2 * 2 = 4 + 2 * 2 = 4 + 4 = 8 + 2 = 8. The answer is \\boxed{8}.", False),
])
def test_loop_at_finds_a_tail_of_four_copies_of_one_block(text, loops):
    from minisir.sampler import loop_at

    assert loop_at(text.encode(), 4) is loops


def _forcing(monkeypatch, sampler, text: str) -> None:
    """Make the model write `text` over and over, whatever its logits say: the failure forced, so the
    test holds on any CPU. The draws still go through the real sampler, decode and stop logic."""
    import minisir.sampler as S

    real, cycle, at = S.sample_rows, sampler.tokenize(text, add_bos=False), {}

    def forced(logits, temperature, top_p, rngs):
        toks, lps = real(logits, temperature, top_p, rngs)
        toks = toks.copy()
        for r, rng in enumerate(rngs):
            k = at.setdefault(id(rng), [0])
            toks[r], k[0] = cycle[k[0] % len(cycle)], k[0] + 1
        return toks, lps

    monkeypatch.setattr(S, "sample_rows", forced)


def test_a_completion_that_loops_stops_there_and_one_that_does_not_runs_on(sampler, monkeypatch):
    from minisir.sampler import loop_at

    _forcing(monkeypatch, sampler, LOOP)
    before = sampler.loops_stopped
    looped = sampler.generate([PROMPTS[0]], n=1, max_tokens=64, temperature=1.0, seed=3, loop_repeats=4)[0][0]
    assert looped.finish_reason == "loop" and sampler.loops_stopped == before + 1
    assert looped.text.endswith(LOOP * 4) and len(looped.token_ids) < 64
    assert len(looped.logprobs) == len(looped.token_ids)
    shorter = sampler.detokenize(looped.token_ids[:-1]).encode()
    assert not loop_at(shorter, 4), "stopped at the first token that completed the fourth copy"
    full = sampler.generate([PROMPTS[0]], n=1, max_tokens=64, temperature=1.0, seed=3, loop_repeats=0)[0][0]
    assert full.finish_reason == "length" and len(full.token_ids) == 64
    assert full.token_ids[:len(looped.token_ids)] == looped.token_ids
    assert sampler.loops_stopped == before + 1


def test_text_that_never_repeats_itself_runs_to_its_limit(sampler, monkeypatch):
    _forcing(monkeypatch, sampler, " ".join(str(i) for i in range(1, 200)))
    out = sampler.generate([PROMPTS[1]], n=2, max_tokens=48, temperature=1.0, seed=5, loop_repeats=4)[0]
    assert [c.finish_reason for c in out] == ["length", "length"]


def test_an_unfinished_completion_is_a_truncated_sample_and_the_step_counts_its_loops():
    """A looped completion never finished its answer, like one cut at the limit: the trainer sees both
    as truncated (method.mask_truncated treats them alike), and a step reports how many loops it cut."""
    from minisir.methods.common import to_sample
    from minisir.sampler import Completion
    from minisir.step_metrics import sampler_split

    done = {reason: to_sample(Completion("x", [1, 2], [-0.1, -0.2], reason, [5]), 0.0, "g").truncated
            for reason in ("stop", "length", "loop")}
    assert done == {"stop": False, "length": True, "loop": True}
    before = {"prompt_s": 0.0, "decode_s": 0.0, "sample_s": 0.0, "decode_calls": 0.0, "decode_rows": 0.0,
              "loops_stopped": 2.0}
    after = {**before, "decode_calls": 10.0, "decode_rows": 40.0, "loops_stopped": 5.0}
    assert sampler_split(before, after, 8)["loop_stops"] == 3.0
