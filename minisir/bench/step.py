"""`minisir bench step`: one full OpenSIR step (loop.Runner) by phase vs the popular stack.

The step's exact sampling calls and training samples are recorded, then replayed by
baselines._baseline_step_worker (transformers generate + TRL or PEFT) in a spawned process.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .baselines import _baseline_step_worker, _trl_available
from .system import _cuda, _isolated, _ratio, _set_threads, gpu_peak_mb, high_water_mb


def _sample_dict(s) -> dict:
    return {"prompt_ids": list(s.prompt_ids), "completion_ids": list(s.completion_ids),
            "sampler_logprobs": list(s.sampler_logprobs), "reward": float(s.reward), "group": s.group,
            "loss_mask": None if s.loss_mask is None else list(s.loss_mask), "truncated": bool(s.truncated)}


def bench_step(
    recipe: Path,
    overrides: dict[str, Any] | None = None,
    baseline: str = "auto",
    threads: int | None = None,
    keep_dir: Path | None = None,
) -> dict:
    """One full OpenSIR step (loop.Runner) by phase, and the same work on the popular stack.

    The baseline replays the step's exact sampling calls (same prompt ids, number of
    samples, token limits, temperature, top_p, stop strings) with transformers `generate`
    and trains on the step's exact samples with TRL's GRPOTrainer (or, without TRL, a
    plain PEFT full-logits step), in a spawned process so its memory is its own.
    """
    from ..errors import MinisirError
    from ..loop import Runner
    from ..recipe import load_recipe

    if baseline == "auto":
        baseline = "trl" if _trl_available() else "peft"
    if baseline == "trl" and not _trl_available():
        raise MinisirError("bench step --baseline trl: TRL is not installed; pip install 'minisir[bench]'")
    run_dir = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="minisir-bench-step-"))
    sets = {"run.steps": 1, **(overrides or {}), "run.dir": str(run_dir)}
    if threads and "sampler.n_threads" not in sets:  # one thread budget for every engine in the comparison
        sets["sampler.n_threads"] = int(threads)
    cfg = load_recipe(recipe, sets)
    if cfg.method.name != "opensir":
        raise MinisirError(f"bench step: method.name is {cfg.method.name!r}; this benchmark times an OpenSIR step")
    if (run_dir / "archive.sqlite").exists():
        raise MinisirError(f"bench step: {run_dir} already holds a run; pass an empty --keep-dir")
    _set_threads(threads)
    calls: list[dict] = []
    trained: list = []
    runner = Runner(cfg, progress=False)
    try:
        # Load everything first: the timed step must not include one-off model loading.
        runner.trainer, runner.embedder  # noqa: B018
        runner.sampler.generate(["Warm up"], n=1, max_tokens=2)
        sample_fn, train_fn = runner.sampler.generate, runner.trainer.step

        def recording_generate(prompts, n=1, max_tokens=256, temperature=1.0, top_p=1.0, seed=0, stop=(), **kw):
            out = sample_fn(prompts, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=stop, **kw)
            calls.append({"role": "teacher" if not calls else "student",
                          "prompt_ids": [list(g[0].prompt_ids) for g in out], "n": n, "max_tokens": max_tokens,
                          "temperature": temperature, "top_p": top_p, "stop": list(stop),
                          "tokens": sum(len(c.token_ids) for g in out for c in g)})
            return out

        def recording_step(samples):
            trained.extend(samples)
            return train_fn(samples)

        runner.sampler.generate = recording_generate
        runner.trainer.step = recording_step
        summary, _ = runner.step(0)
        metrics = runner.archive.steps()[0]["metrics"]
        gguf, hf_dir = runner.gguf, runner.hf_dir
    finally:
        runner.close()
    minisir_peak = high_water_mb()
    minisir_gpu = gpu_peak_mb()
    del runner
    gc.collect()

    tcfg = cfg.trainer.model_copy(update={"seed": cfg.run.seed})
    base = _isolated(_baseline_step_worker, gguf=str(gguf), hf_dir=str(hf_dir) if hf_dir else None, calls=calls, samples=[_sample_dict(s) for s in trained],
                     trainer_cfg=tcfg.model_dump(), temperature=cfg.method.temperature, seed=cfg.run.seed,
                     baseline=baseline, threads=threads)
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)

    phases = {k[len("seconds_"):]: v for k, v in metrics.items() if k.startswith("seconds_")}
    m_sample_tokens = sum(c["tokens"] for c in calls)
    m_sample_s = phases.get("teacher", 0.0) + phases.get("student", 0.0)
    b_sample_tokens = sum(g["tokens"] for g in base["generate"])
    b_sample_s = sum(g["seconds"] for g in base["generate"])
    m_tps = m_sample_tokens / m_sample_s if m_sample_s else None
    b_tps = b_sample_tokens / b_sample_s if b_sample_s else None
    # Sampling draws differ between engines; scale the baseline to minisir's token count.
    b_sample_norm = m_sample_tokens / b_tps if b_tps else b_sample_s
    b_step = b_sample_norm + base["update_seconds"]
    m_comparable = m_sample_s + phases.get("train", 0.0)
    label = ("transformers-generate + trl GRPOTrainer (LoRA)" if baseline == "trl"
             else "transformers-generate + peft full-logits GRPO")
    by_role = {}
    for call, gen in zip(calls, base["generate"]):
        role = call["role"]
        by_role[role] = {
            "prompts": len(call["prompt_ids"]), "n": call["n"], "max_tokens": call["max_tokens"],
            "minisir_tokens": call["tokens"], "minisir_seconds": phases.get(role),
            "minisir_tokens_per_s": metrics.get(f"{role}_tokens_per_s"),
            "baseline_tokens": gen["tokens"], "baseline_seconds": gen["seconds"],
            "baseline_tokens_per_s": round(gen["tokens"] / gen["seconds"], 2) if gen["seconds"] else None,
        }
        by_role[role]["speedup"] = _ratio(by_role[role]["minisir_tokens_per_s"], by_role[role]["baseline_tokens_per_s"])
    return {
        "benchmark": "step",
        "recipe": str(recipe),
        "overrides": overrides or {},
        "device": "GPU" if _cuda() else f"CPU x{os.cpu_count()}",
        "baseline": label,
        "summary": summary,
        "minisir": {
            "seconds_step": metrics.get("seconds_step"),
            "phases_seconds": phases,
            "teacher_tokens_per_s": metrics.get("teacher_tokens_per_s"),
            "student_tokens_per_s": metrics.get("student_tokens_per_s"),
            "sample_tokens": m_sample_tokens,
            "train_tokens": metrics.get("train_tokens"),
            "train_samples": len(trained),
            "peak_rss_mb": round(minisir_peak, 1),
            "gpu_peak_mb": minisir_gpu,
        },
        "baseline_run": {
            "sample_seconds": round(b_sample_s, 3),
            "sample_seconds_at_minisir_tokens": round(b_sample_norm, 3),
            "sample_tokens": b_sample_tokens,
            "update_seconds": base["update_seconds"],
            "step_seconds": round(b_step, 3),
            "load_seconds": base["load_seconds"],
            "peak_rss_mb": base["peak_rss_mb"],
            "peak_rss_delta_mb": base["peak_rss_delta_mb"],
            "gpu_peak_mb": base["gpu_peak_mb"],
        },
        "sampling_by_role": by_role,
        "speedup_vs_trl" if baseline == "trl" else "speedup_vs_baseline": {
            "sampling": _ratio(m_tps, b_tps),
            "update": _ratio(base["update_seconds"], phases.get("train")),
            "sampling_plus_update": _ratio(b_step, m_comparable),
            "step": _ratio(b_step, metrics.get("seconds_step")),
        },
        "notes": "sampling = tokens/s ratio; update = baseline update seconds / minisir train-phase seconds on the "
                 "same samples; sampling_plus_update compares like with like; step divides by minisir's whole step, "
                 "which also embeds, scores, exports the GGUF adapter, saves state and commits (the baseline does "
                 "none of that). Baseline sampling time is scaled to minisir's number of sampled tokens.",
    }
