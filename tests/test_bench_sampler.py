"""`minisir bench sampler`: ratios against the baseline measured in the same run, and the time split."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from minisir.cli import main


def test_bench_sampler_reports_its_split_and_ratio():
    result = CliRunner().invoke(main, ["bench", "sampler", "--prompts", "2", "-n", "2", "--max-tokens", "8",
                                       "--parallel", "4", "--temperature", "0.6", "--top-p", "0.95", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout.strip().splitlines()[-1])
    split = r["batched_split_s"]
    assert set(split) == {"prompt_s", "decode_s", "sample_s", "other_s"}
    assert split["prompt_s"] > 0 and split["decode_s"] > 0 and split["sample_s"] > 0
    assert sum(split.values()) == pytest.approx(r["batched_seconds"], abs=0.01)  # the parts add up
    assert r["sampling_share"] == pytest.approx(split["sample_s"] / r["batched_seconds"], abs=0.002)
    assert r["speedup_vs_sequential"] == pytest.approx(r["batched_tokens_per_s"] / r["sequential_tokens_per_s"],
                                                       rel=0.02)
    assert 0 < r["batched_tokens"] <= 2 * 2 * 8 and (r["temperature"], r["top_p"]) == (0.6, 0.95)
    # the compute roofline is measured in the same run, and the fractions are of it
    assert r["flops_per_token"] > 0 and 0 < r["output_layer_flops_share"] < 1
    assert r["compute_roofline_tokens_per_s"] > 0 and r["logits_tokens_per_s_at_parallel"] > 0
    assert r["batched_fraction_of_compute_roofline"] == pytest.approx(
        r["batched_tokens_per_s"] / r["compute_roofline_tokens_per_s"], rel=0.02)
    assert r["compute_roofline_speedup_over_sequential"] == pytest.approx(
        r["compute_roofline_tokens_per_s"] / r["sequential_tokens_per_s"], rel=0.02)
    assert r["compute_roofline_gflops"] == pytest.approx(
        r["compute_roofline_tokens_per_s"] * r["flops_per_token"] / 1e9, rel=0.02)
