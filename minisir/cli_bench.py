"""`minisir bench ...`: each command times minisir against a baseline measured in the same run and
prints JSON (speed is measured here, never asserted in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_common import friendly, parse_sets
from .errors import MinisirError


@click.group()
def bench() -> None:
    """Speed and memory against a baseline measured in the same run (JSON)."""


@bench.command("sampler")
@click.option("--model", default="bundled", help='GGUF path or "bundled".')
@click.option("--prompts", default=4, show_default=True)
@click.option("-n", "n", default=4, show_default=True, help="Completions per prompt.")
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--parallel", default=16, show_default=True, help="Parallel sequences.")
@click.option("--threads", type=int, default=None)
@click.option("--temperature", default=1.0, show_default=True, help="Sampling temperature of the batched path.")
@click.option("--top-p", default=1.0, show_default=True, help="Nucleus mass of the batched path (< 1 sorts candidates).")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly
def bench_sampler_cmd(model: str, prompts: int, n: int, max_tokens: int, parallel: int, threads: int | None,
                      temperature: float, top_p: float, as_json: bool) -> None:
    """Batched sampler vs a one-sequence-at-a-time Llama.__call__ loop, with the batched call's
    time split into prompt decoding, step decoding and numpy sampling."""
    from .assets import resolve_gguf
    from .bench.sampling import bench_sampler

    result = bench_sampler(resolve_gguf(model), prompts=prompts, n=n, max_tokens=max_tokens,
                           n_parallel=parallel, n_threads=threads, temperature=temperature, top_p=top_p)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench.command("server")
@click.option("--url", required=True, help="An OpenAI-compatible completions server, e.g. http://127.0.0.1:8000.")
@click.option("--model", default="bundled", help='GGUF of the served model (tokenizer; the in-process baseline).')
@click.option("--served-model", default=None, help="The server's model name (default: the first /v1/models lists).")
@click.option("--prompts", default=4, show_default=True)
@click.option("-n", "n", default=4, show_default=True, help="Completions per prompt.")
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--concurrency", default=8, show_default=True, help="Requests in flight (sampler.max_concurrency).")
@click.option("--parallel", default=16, show_default=True, help="Parallel sequences of the in-process sampler.")
@click.option("--threads", type=int, default=None, help="llama.cpp threads of the in-process sampler.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly
def bench_server_cmd(url: str, model: str, served_model: str | None, prompts: int, n: int, max_tokens: int,
                     concurrency: int, parallel: int, threads: int | None, as_json: bool) -> None:
    """Sampling on a completions server vs the in-process batched sampler, same prompts and n."""
    from .assets import resolve_gguf
    from .bench.sampling import bench_server

    result = bench_server(url, resolve_gguf(model), served_model=served_model, prompts=prompts, n=n,
                          max_tokens=max_tokens, max_concurrency=concurrency, n_parallel=parallel,
                          n_threads=threads)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench.command("train")
@click.option("--model", default="bundled", help='GGUF path or "bundled".')
@click.option("--hf-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Train this HF checkpoint instead of the dequantised GGUF.")
@click.option("--samples", default=8, show_default=True, help="Sequences in the GRPO step.")
@click.option("--prompt-tokens", default=32, show_default=True)
@click.option("--completion-tokens", default=128, show_default=True)
@click.option("--repeats", default=2, show_default=True, help="Timed steps per path (after one warm-up step).")
@click.option("--lora-rank", default=16, show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly
def bench_train_cmd(model: str, hf_dir: Path | None, samples: int, prompt_tokens: int, completion_tokens: int,
                    repeats: int, lora_rank: int, threads: int | None, as_json: bool) -> None:
    """GRPO step: chunked log-probs (GRPOTrainer) vs full (batch, seq, vocab) logits."""
    from .assets import resolve_gguf
    from .bench.training import bench_train

    result = bench_train(None if hf_dir else resolve_gguf(model), hf_dir=hf_dir, samples=samples,
                         prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, repeats=repeats,
                         lora_rank=lora_rank, threads=threads)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench.command("step")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path), default="recipes/opensir-tiny.yaml")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe field.")
@click.option("--baseline", type=click.Choice(["auto", "trl", "peft"]), default="auto", show_default=True,
              help="auto: TRL when installed (pip install 'minisir[bench]'), else PEFT full logits.")
@click.option("--threads", type=int, default=None,
              help="torch and llama.cpp threads for both stacks (default: their own choice).")
@click.option("--keep-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the step's run directory here (default: a temp dir, deleted).")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly
def bench_step_cmd(recipe: Path, sets: tuple[str, ...], baseline: str, threads: int | None, keep_dir: Path | None,
                   as_json: bool) -> None:
    """One OpenSIR step by phase vs transformers generate + TRL GRPOTrainer on the same work."""
    from .bench.step import bench_step

    result = bench_step(recipe, parse_sets(sets), baseline=baseline, threads=threads, keep_dir=keep_dir)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench.command("archive")
@click.option("--sizes", default="1000,10000,100000", show_default=True, help="Archived problems, comma separated.")
@click.option("--new", default=16, show_default=True, help="New problems per step.")
@click.option("--solutions", default=128, show_default=True, help="Solutions committed per step.")
@click.option("--dim", default=384, show_default=True, help="Embedding size (all-MiniLM-L6-v2: 384).")
@click.option("--repeats", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly
def bench_archive_cmd(sizes: str, new: int, solutions: int, dim: int, repeats: int, as_json: bool) -> None:
    """Diversity scoring and step commit time as the archive grows (growth per 10x)."""
    from .bench.archive import bench_archive

    try:
        counts = tuple(int(x) for x in sizes.split(",") if x.strip())
    except ValueError:
        raise MinisirError(f"--sizes {sizes}: expected comma-separated integers, e.g. 1000,10000") from None
    if len(counts) < 2 or min(counts) < 1:
        raise MinisirError(f"--sizes {sizes}: give at least two positive sizes, e.g. 1000,10000")
    result = bench_archive(counts, new=new, solutions=solutions, dim=dim, repeats=repeats)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench.command("sync")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--other", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Another run's adapter GGUF, measured as a fault too.")
@click.option("--texts", default=3, show_default=True, help="Probe texts taken from the run's latest step.")
@friendly
def bench_sync_cmd(run_dir: Path, other: Path | None, texts: int) -> None:
    """The sync guard on RUN_DIR's latest adapter: healthy, and each fault it must catch."""
    from .bench.sync import bench_sync

    click.echo(json.dumps(bench_sync(run_dir, other=other, texts=texts), indent=2))
