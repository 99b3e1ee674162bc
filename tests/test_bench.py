"""Benchmarks run on tiny sizes and return the documented keys with sane values (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from minisir import bench
from minisir.archive_stats import stats
from minisir.cli import main
from tiny_models import tiny_hf_dir
from tiny_run import force_valid_problem

torch.set_num_threads(1)  # the machine's 2 cores are shared


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_hf_dir(tmp_path_factory.mktemp("models"))


def test_train_bench_tiny_model(tiny):
    out = bench.bench_train(None, hf_dir=tiny, samples=4, prompt_tokens=6, completion_tokens=10, repeats=1,
                            lora_rank=4, threads=1, isolate=False)
    assert out["benchmark"] == "train"
    for key in ("speedup", "memory_ratio", "chunked", "full_logits", "peak_rss_mb", "first_loss_abs_diff"):
        assert key in out
    assert out["trained_tokens"] == 4 * 10
    for path in ("chunked", "chunked_no_share", "full_logits"):
        r = out[path]
        assert r["tokens"] == 40 and r["tokens_per_s"] > 0 and r["seconds_per_step"] > 0
        assert r["peak_rss_mb"] >= r["rss_after_load_mb"] > 0
        assert np.isfinite(r["first_loss"])
    assert out["speedup"] > 0 and out["share_prompt_speedup"] > 0
    assert abs(out["chunked"]["first_loss"] - out["chunked_no_share"]["first_loss"]) < 1e-4
    # Both paths implement the same loss from the same LoRA init: the first step's loss must agree.
    assert out["first_loss_abs_diff"] < 1e-4


def test_full_logits_step_matches_trainer_gradient_direction(tiny):
    """The baseline must train the same objective, or its speed would mean nothing."""
    from minisir.trainer import GRPOTrainer, TrainerConfig

    # Every sample with its own prompt: Adam's first update is about lr * sign(grad), and shared
    # prompts leave LoRA gradient entries near zero whose sign float rounding decides.
    # test_trainer checks shared-prompt gradients against full forwards directly.
    cfg = TrainerConfig(lora_rank=4, lora_alpha=8, learning_rate=1e-2)
    samples = bench.synthetic_samples(512, 8, 5, 7, seed=3, shared_prompt=False)
    a = GRPOTrainer(cfg, None, hf_dir=tiny, seed=0)
    b = GRPOTrainer(cfg, None, hf_dir=tiny, seed=0)
    before = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}
    ma = a.step(samples)
    mb = bench.full_logits_grpo_step(b.model, b.optimizer, b.params, samples, cfg, b._pad_id)
    assert ma["tokens"] == mb["tokens"] == 8 * 7
    assert abs(ma["loss"] - mb["loss"]) < 1e-4
    pa = dict(a.model.named_parameters())
    pb = dict(b.model.named_parameters())
    moved = 0
    for name, old in before.items():
        da, db = pa[name].detach() - old, pb[name].detach() - old
        if da.abs().max() > 0:
            moved += 1
            assert torch.allclose(da, db, atol=1e-5), name
    assert moved > 0


def test_synthetic_samples_have_signal():
    from minisir.trainer import group_advantages

    samples = bench.synthetic_samples(100, 8, 4, 6, seed=1)
    assert len(samples) == 8 and all(len(s.completion_ids) == 6 for s in samples)
    assert all(max(s.prompt_ids + s.completion_ids) < 100 for s in samples)
    _, used, skipped = group_advantages(samples, True)
    assert used == 2 and skipped == 0


def test_archive_bench_small(tmp_path):
    out = bench.bench_archive(sizes=(100, 1000), repeats=2, solutions_per_archived=2, workdir=tmp_path)
    assert out["benchmark"] == "archive"
    assert [r["archived"] for r in out["sizes"]] == [100, 1000]
    for r in out["sizes"]:
        assert r["valid_problems_rows"] == r["archived"]
        assert r["diversity_ms"] > 0 and r["commit_ms"] > 0
        assert r["diversity_median_ms"] >= r["diversity_ms"] and r["commit_median_ms"] >= r["commit_ms"]
    small, big = out["sizes"]
    # 100 -> 1000 is one decade: growth per 10x is the plain ratio of the two timings.
    for key, name in (("diversity_ms", "diversity"), ("commit_ms", "commit")):
        ratio = big[key] / small[key]
        assert out[f"{name}_ratio_vs_smallest"] == pytest.approx([1.0, ratio], abs=0.01)
        assert out["growth_per_10x"][name] == pytest.approx([ratio], abs=0.01)
        assert out["growth_per_10x_smallest_to_largest"][name] == pytest.approx(ratio, abs=0.01)
    assert out["solutions_per_step"] == 128 and out["peak_rss_mb"] > 0
    assert not list(tmp_path.iterdir())  # temp archives removed


class _Clock:
    """bench's clock, under the test's control: call k returns the sum of the first k intervals."""

    def __init__(self, interval):
        self.interval, self.calls, self.now = interval, 0, 0.0

    def perf_counter(self) -> float:
        self.now += self.interval(self.calls)
        self.calls += 1
        return self.now

    @staticmethod
    def time() -> float:
        return 1.7e9


def test_archive_bench_judges_growth_from_its_timings(tmp_path, monkeypatch):
    """no_worse_than_linear says whether the operations grew at most ~linearly with the archive. Timed
    by a clock where everything takes 1 ms, nothing grows (True, growth 1.0 per 10x); by one where
    each timed interval is 10% longer than the one before, the later, bigger archive's timings are
    over 100x the small one's for 10x the rows: worse than linear (False)."""
    import sys

    where = sys.modules[bench.bench_archive.__module__]  # the module whose clock bench_archive reads
    flat = _Clock(lambda k: 0.001)
    monkeypatch.setattr(where, "time", flat)
    out = bench.bench_archive(sizes=(50, 500), repeats=2, solutions_per_archived=1, workdir=tmp_path)
    assert flat.calls > 50  # the bench really timed with this clock
    assert [(r["diversity_ms"], r["commit_ms"]) for r in out["sizes"]] == [(1.0, 1.0), (1.0, 1.0)]
    assert out["growth_per_10x"]["diversity"] == [1.0] and out["growth_per_10x"]["commit"] == [1.0]
    assert out["no_worse_than_linear"] is True

    slowing = _Clock(lambda k: 0.001 * 1.1 ** k)
    monkeypatch.setattr(where, "time", slowing)
    out = bench.bench_archive(sizes=(50, 500), repeats=2, solutions_per_archived=1, workdir=tmp_path)
    assert out["growth_per_10x"]["diversity"][0] > 100 and out["growth_per_10x"]["commit"][0] > 100
    assert out["no_worse_than_linear"] is False
    assert not list(tmp_path.iterdir())


def test_archive_bench_commits_are_real(tmp_path):
    """The populated archive is a real minisir archive that commit_step and diversity accept."""
    from minisir.archive import Archive

    path = tmp_path / "a.sqlite"
    bench._populate(path, 50, 8, 1, seed=0)
    with Archive.open(path) as arc:
        emb, ids = arc.embedding_matrix()
        assert emb.shape == (50, 8) and len(ids) == 50
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        problems, sols = bench._step_rows(arc.last_step() + 1, np.random.default_rng(0), 4, 2, 8)
        keys = arc.commit_step({"step": arc.last_step() + 1}, problems, sols, None)
        assert len(keys) == 4
        assert arc.embedding_matrix()[0].shape == (54, 8)
        assert stats(arc)["solutions"] == 50 + 8


def test_growth_is_per_decade():
    assert bench._growth([10, 100], [1.0, 10.0]) == [10.0]
    assert bench._growth([10, 1000], [1.0, 100.0]) == [10.0]  # 100x over two decades = 10x per decade
    assert bench._growth([10, 100], [2.0, 2.0]) == [1.0]


def test_roofline_fields(tmp_path):
    import gguf

    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("a", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert bench.weight_bytes(path) == 64 * 64 * 4
    out = bench.roofline(path, batched_tps=100.0, sequential_tps=10.0, parallel=4)
    assert out["memory_bandwidth_gbs"] > 0 and out["roofline_batch1_tokens_per_s"] > 0
    assert out["batched_fraction_of_batch1_roofline"] == pytest.approx(
        10 * out["sequential_fraction_of_roofline"], rel=0.02)
    assert out["batched_weight_pass_fraction"] == pytest.approx(out["batched_fraction_of_batch1_roofline"] / 4,
                                                                rel=0.02)


@pytest.mark.parametrize("untied", [False, True])
def test_matmul_flops_count_the_output_layer_once(tmp_path, untied):
    import gguf

    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((10, 4), dtype=np.float32))  # vocab 10, width 4
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), dtype=np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.zeros(4, dtype=np.float32))  # 1-D: no matmul
    if untied:
        writer.add_tensor("output.weight", np.zeros((10, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    flops, share = bench.matmul_flops_per_token(path)
    assert flops == 2 * (16 + 40) and share == pytest.approx(40 / 56)


def test_cli_archive_json(tmp_path):
    res = CliRunner().invoke(main, ["bench", "archive", "--sizes", "50,500", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["benchmark"] == "archive" and len(out["sizes"]) == 2


def test_cli_archive_bad_sizes():
    res = CliRunner().invoke(main, ["bench", "archive", "--sizes", "1000"])
    assert res.exit_code == 2 and "--sizes" in res.output


def test_trl_update_consumes_samples(tiny, tmp_path):
    """TRL's GRPOTrainer takes minisir's samples through rollout_func and makes one LoRA update.

    TRL is in the test extra, so this runs wherever the suite does (CI included); it fails, never
    skips, where TRL is missing."""
    assert bench._trl_available(), "TRL is not installed: the test extra carries it (./setup.sh)"
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from minisir.trainer import TrainerConfig

    vocab = {f"t{i}": i for i in range(512)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="t0", eos_token="t1", bos_token="t2",
                                  unk_token="t3", padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    samples = bench.synthetic_samples(512, 8, 5, 7, seed=3)
    samples[0].truncated = True
    cfg = TrainerConfig(lora_rank=4, lora_alpha=8, learning_rate=1e-2)
    out = bench.trl_update(model, tok, samples, cfg, temperature=1.0, seed=0, workdir=tmp_path)
    assert out["seconds"] > 0
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.detach().abs().sum() > 0 for p in lora_b)  # zero-initialised: the update moved it


def test_hf_generate_counts_tokens(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)

    class _Tok:  # only pad_token_id is read when there are no stop strings
        pad_token_id = 0

    res = bench.hf_generate(model, _Tok(), [[2, 5, 6], [2, 7]], n=2, max_tokens=5, temperature=1.0, top_p=1.0,
                            stop=[], seed=0)
    assert res["sequences"] == 4 and len(res["completions"]) == 4
    assert 0 < res["tokens"] <= 4 * 5
    assert res["tokens"] == sum(len(c) for c in res["completions"])


@pytest.mark.slow
def test_step_bench_quickstart_tiny(monkeypatch):
    """A whole step on the bundled model with tiny token limits, against the PEFT baseline (minutes).

    The teacher's first problem is a known valid one (tiny_run.force_valid_problem), so students
    sample, a group trains and the adapter is exported whatever this CPU samples: those phases
    took time, and the timed phases, run one after the other inside the step, add up to at most it."""
    force_valid_problem(monkeypatch)
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "opensir-tiny.yaml"  # what bench step times
    out = bench.bench_step(recipe, {"method.teacher_max_tokens": 24, "method.student_max_tokens": 16},
                           baseline="peft", threads=1)
    assert out["benchmark"] == "step"
    assert out["baseline"] == "transformers-generate + peft full-logits GRPO"
    phases = out["minisir"]["phases_seconds"]
    for name in ("teacher", "student", "train", "export", "step"):
        assert phases[name] > 0, (name, phases)
    inside = {k: v for k, v in phases.items() if k != "step"}
    assert {"references", "parse", "embed", "rewards"} <= set(inside)
    assert sum(inside.values()) <= phases["step"] + 0.0005 * len(inside), phases  # each rounded to 1 ms
    assert out["minisir"]["seconds_step"] == phases["step"]
    assert out["sampling_by_role"]["teacher"]["prompts"] == 1 and out["sampling_by_role"]["teacher"]["n"] == 4
    assert out["sampling_by_role"]["student"]["prompts"] >= 1 and out["sampling_by_role"]["student"]["n"] == 4
    assert out["minisir"]["train_samples"] >= 4 and out["minisir"]["train_tokens"] > 0
    assert out["baseline_run"]["sample_tokens"] > 0 and out["minisir"]["sample_tokens"] > 0
    assert out["baseline_run"]["update_seconds"] > 0
    speedups = out["speedup_vs_baseline"]
    assert set(speedups) == {"sampling", "update", "sampling_plus_update", "step"}
    assert all(v is not None and v > 0 for v in speedups.values()), speedups
    assert out["minisir"]["peak_rss_mb"] > 0 and out["baseline_run"]["peak_rss_mb"] > 0
