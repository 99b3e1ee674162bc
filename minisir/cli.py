"""The `minisir` command line: run, doctor, generate, archive, export, eval, report, bench.

User mistakes (MinisirError) print one line and exit 2; tracebacks are for bugs only.
Heavy imports happen inside commands so `minisir --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import MinisirError


def _friendly(fn: Callable) -> Callable:
    """Turn MinisirError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MinisirError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """--set a.b=value pairs; values parsed as YAML scalars (numbers, bools, null)."""
    import yaml

    out = {}
    for item in values:
        if "=" not in item:
            raise MinisirError(f"--set {item}: expected KEY=VALUE, e.g. --set run.steps=3")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minisir")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Self-play reasoning training on one GPU (OpenSIR, SQLM): llama.cpp sampling,
    PEFT LoRA GRPO, a SQLite archive you can resume from."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- run
@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--steps", type=int, default=None, help="Run at most this many more steps.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe field.")
@_friendly
def run(recipe: Path, steps: int | None, sets: tuple[str, ...]) -> None:
    """Run (or resume) the self-play loop described by RECIPE."""
    from .loop import Runner, StopRequested
    from .recipe import load_recipe

    cfg = load_recipe(recipe, _parse_sets(sets))
    runner = Runner(cfg)
    try:
        done = runner.run(steps)
    except StopRequested:
        click.echo(f"stopped cleanly; resume with: minisir run {recipe}", err=True)
        sys.exit(130)
    finally:
        runner.close()
    last = runner.archive.path
    click.echo(f"{done} step(s) committed to {last}")


# --------------------------------------------------------------------------- doctor
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@_friendly
def doctor(as_json: bool) -> None:
    """Check the installation: versions, llama.cpp build, bundled model, embedder, GPU."""
    from .doctor import run_checks

    report, problems = run_checks()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            click.echo(f"{key:>22}: {value}")
        for fix in problems:
            click.echo(f"PROBLEM: {fix}", err=True)
    sys.exit(1 if problems else 0)


# --------------------------------------------------------------------------- generate
@main.command()
@click.argument("prompt")
@click.option("--model", default="bundled", help='GGUF path or "bundled".')
@click.option("--adapter", type=click.Path(exists=True, dir_okay=False), default=None, help="GGUF LoRA adapter.")
@click.option("-n", "n", default=1, show_default=True, help="Completions.")
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--temperature", default=0.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@_friendly
def generate(prompt: str, model: str, adapter: str | None, n: int, max_tokens: int, temperature: float,
             seed: int) -> None:
    """Sample completions of PROMPT with the batched sampler."""
    from .assets import resolve_gguf
    from .sampler import Sampler

    with Sampler(resolve_gguf(model), n_ctx=4096, n_parallel=max(1, n)) as sampler:
        if adapter:
            sampler.set_adapter(adapter)
        for c in sampler.generate([prompt], n=n, max_tokens=max_tokens, temperature=temperature, seed=seed)[0]:
            click.echo(f"--- {len(c.token_ids)} tokens, {c.finish_reason}")
            click.echo(prompt + c.text)


# --------------------------------------------------------------------------- archive
def _open_archive(run_dir: Path):
    from .archive import ARCHIVE_NAME, Archive
    from .errors import ArchiveError

    path = run_dir / ARCHIVE_NAME if run_dir.is_dir() else run_dir
    if not path.exists():
        raise ArchiveError(f"{path} does not exist; pass a run directory made by `minisir run`")
    return Archive.open(path, readonly=True)


@main.group()
def archive() -> None:
    """Look inside a run's archive."""


@archive.command("stats")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@_friendly
def archive_stats(run_dir: Path) -> None:
    """Counts, rates and the last step of RUN_DIR."""
    with _open_archive(run_dir) as arc:
        for key, value in arc.stats().items():
            click.echo(f"{key:>24}: {value}")


@archive.command("problems")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--valid-only", is_flag=True)
@_friendly
def archive_problems(run_dir: Path, limit: int, offset: int, valid_only: bool) -> None:
    """List problems with step, parent, solve rate, reward and concepts."""
    with _open_archive(run_dir) as arc:
        click.echo(f"{'id':>5} {'step':>4} {'parent':>6} {'solve':>5} {'reward':>6}  problem / concepts")
        for p in arc.problems(limit=limit, offset=offset, valid_only=valid_only):
            solve = "-" if p.get("solve_rate") is None else f"{p['solve_rate']:.2f}"
            reward = "-" if p.get("teacher_reward") is None else f"{p['teacher_reward']:.2f}"
            text = (p.get("text") or f"[invalid: {p.get('invalid_reason')}]").replace("\n", " ")
            concepts = p.get("concepts") or ""
            click.echo(f"{p['id']:>5} {p.get('step', '-'):>4} {p.get('parent_id') or '-':>6} {solve:>5} "
                       f"{reward:>6}  {text[:90]}  [{concepts if isinstance(concepts, str) else ', '.join(concepts)}]")


@archive.command("show")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.argument("problem_id", type=int)
@_friendly
def archive_show(run_dir: Path, problem_id: int) -> None:
    """One problem with its lineage, answers and solutions."""
    with _open_archive(run_dir) as arc:
        p = arc.problem(problem_id)
    skip = {"embedding", "solutions", "lineage", "raw"}
    for key, value in p.items():
        if key not in skip and value is not None:
            click.echo(f"{key:>16}: {value}")
    for i, anc in enumerate(p.get("lineage", [])):
        click.echo(f"{'ancestor ' + str(i + 1):>16}: #{anc.get('id')} {str(anc.get('text'))[:100]}")
    for i, s in enumerate(p.get("solutions", [])):
        mark = "agree" if s.get("agrees") else "     "
        click.echo(f"--- solution {i} [{mark}] answer={s.get('answer')} reward={s.get('reward')}")
        click.echo(str(s.get("text"))[:600])


# --------------------------------------------------------------------------- bench
@main.group()
def bench() -> None:
    """Speed and memory against a baseline measured in the same run (JSON)."""


@bench.command("sampler")
@click.option("--model", default="bundled", help='GGUF path or "bundled".')
@click.option("--prompts", default=4, show_default=True)
@click.option("-n", "n", default=4, show_default=True, help="Completions per prompt.")
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--parallel", default=16, show_default=True, help="Parallel sequences.")
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@_friendly
def bench_sampler_cmd(model: str, prompts: int, n: int, max_tokens: int, parallel: int, threads: int | None,
                      as_json: bool) -> None:
    """Batched sampler vs a one-sequence-at-a-time Llama.__call__ loop."""
    from .assets import resolve_gguf
    from .bench import bench_sampler

    result = bench_sampler(resolve_gguf(model), prompts=prompts, n=n, max_tokens=max_tokens,
                           n_parallel=parallel, n_threads=threads)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
