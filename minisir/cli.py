"""The `minisir` command line: run, doctor, generate, archive, export, eval, report, bench.

User mistakes (MinisirError) print one line and exit 2; tracebacks are for bugs only.
Heavy imports happen inside commands so `minisir --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from . import __version__
from .cli_bench import bench
from .cli_common import friendly, parse_sets
from .errors import MinisirError
from .signals import handling


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minisir")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Self-play reasoning training on one GPU (OpenSIR, SQLM): llama.cpp sampling,
    PEFT LoRA GRPO, a SQLite archive you can resume from."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- run
class _Stop(KeyboardInterrupt):
    """SIGTERM/SIGINT arrived while the run loop's own handler was not installed."""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Make SIGTERM/SIGINT stop `minisir run` from its first moment.

    Why: as PID 1 in a container a process has no default action for SIGTERM, so until the
    loop installs its handler `docker stop` waited 10 s and then SIGKILLed. Before the loop
    nothing is half-written that a stop could lose (the archive commits whole steps only), so
    the handler raises at once, as Python's default SIGINT handler does; while the loop runs,
    its own handler replaces this one and stops at the end of the current phase.
    """
    def stop(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    with handling(stop):
        yield


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--steps", type=int, default=None, help="Run at most this many more steps.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe field.")
@click.option("--force-config", is_flag=True, help=(
    "Resume although run.seed, run.rounds_per_step or the LoRA's rank, alpha or targets changed "
    "(refused otherwise: they change what the saved state means)."))
@friendly
def run(recipe: Path, steps: int | None, sets: tuple[str, ...], force_config: bool) -> None:
    """Run (or resume) the self-play loop described by RECIPE."""
    import shlex

    # The hint repeats the --set overrides: without e.g. run.dir a "resume" would start afresh.
    argv = ["minisir", "run", str(recipe)] + [x for s in sets for x in ("--set", s)] + ["--force-config"] * force_config
    again = " ".join(shlex.quote(a) for a in argv)
    try:
        with _stop_on_signals():
            from .loop import Runner, StopRequested
            from .recipe import load_recipe

            cfg = load_recipe(recipe, parse_sets(sets))
            runner = Runner(cfg, force_config=force_config)
            try:
                done = runner.run(steps)
            except StopRequested:
                raise _Stop("loop") from None
            finally:
                runner.close(failed=sys.exc_info()[0] is not None)
    except _Stop:
        click.echo(f"stopped cleanly; resume with: {again}", err=True)
        sys.exit(130)
    if runner.ranks.is_main:  # one line per run, not one per data-parallel rank
        click.echo(f"{done} step(s) committed to {runner.archive.path}")
        click.echo(next_commands(cfg))


def next_commands(recipe: Any) -> str:
    """What a user does after a run: look at it, measure it, browse it (and the recipe's own hint)."""
    import shlex

    where = shlex.quote(str(recipe.run_dir))
    lines = [
        "next:",
        f"  minisir report {where}                      # plots and tables of the run",
        f"  minisir eval {where} --compare base,latest --benchmark {recipe.eval.benchmark} --n 100"
        "   # held-out accuracy, base against trained, paired",
        f"  minisir archive browse {where}              # the problems, answers and rewards",
    ]
    if recipe.run.next_command:
        lines.append(f"  {recipe.run.next_command}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- doctor
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@friendly
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
@friendly
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
@click.option("--per-step", is_flag=True, help="One row per step: shares of the generated problems that parsed, "
              "got a label, were valid (admitted) and got a teacher reward above 0.")
@friendly
def archive_stats(run_dir: Path, per_step: bool) -> None:
    """Counts, rates and the last step of RUN_DIR."""
    from .archive_stats import stats, step_gates

    with _open_archive(run_dir) as arc:
        if per_step:
            click.echo(f"{'step':>5} {'outputs':>7} {'parsed':>6} {'labelled':>8} {'valid':>5} {'rewarded':>8}")
            for g in step_gates(arc):
                n = g["outputs"]
                click.echo(f"{g['step']:>5} {n:>7} " + " ".join(
                    f"{g[k] / n:>{w}.2f}" for k, w in (("parsed", 6), ("labelled", 8), ("valid", 5), ("paid", 8))))
            return
        for key, value in stats(arc).items():
            if isinstance(value, dict):  # the refusals by kind: one per line, most frequent first
                click.echo(f"{key:>24}:" + ("" if value else " none"))
                for kind, n in value.items():
                    click.echo(f"{n:>24}  {kind}")
            else:
                click.echo(f"{key:>24}: {value}")


@archive.command("upgrade")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@friendly
def archive_upgrade(run_dir: Path) -> None:
    """Upgrade RUN_DIR's archive to this minisir's schema, keeping a backup (resuming the run does it too)."""
    from .archive import ARCHIVE_NAME, Archive
    from .archive_schema import SCHEMA_VERSION, check_readonly

    path = run_dir / ARCHIVE_NAME if run_dir.is_dir() else run_dir
    before = check_readonly(path) if path.is_file() and path.stat().st_size else None
    with Archive.open(path, readonly=before is None):  # a missing or empty archive is refused, never created
        pass
    if before == SCHEMA_VERSION:
        click.echo(f"{path} already has schema {SCHEMA_VERSION}")
    else:
        click.echo(f"{path} upgraded from schema {before} to {SCHEMA_VERSION}; the old file is kept as "
                   f"{path.name}.v{before}.bak")


@archive.command("steps")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@friendly
def archive_steps(run_dir: Path) -> None:
    """One line per committed step: rewards, rates, seconds and adapter."""
    from .step_metrics import summary_line

    with _open_archive(run_dir) as arc:
        for row in arc.steps():
            click.echo(f"{summary_line(row['step'], row['metrics'] or {})}  {row.get('adapter_path') or ''}")


@archive.command("problems")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--valid-only", is_flag=True)
@friendly
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
@friendly
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


@archive.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--min-solve", type=click.FloatRange(0, 1), default=None, help="Keep problems solved at least this often.")
@click.option("--max-solve", type=click.FloatRange(0, 1), default=None, help="Keep problems solved at most this often.")
@friendly
def archive_export(run_dir: Path, out: Path, min_solve: float | None, max_solve: float | None) -> None:
    """Write the valid problems (label and its source, solve rate, lineage, agreeing solutions)
    to OUT.jsonl or OUT.parquet, which `datasets.load_dataset` reads as they are."""
    from .share import export_problems

    n = export_problems(run_dir, out, min_solve, max_solve)
    click.echo(f"{n} problem(s) written to {out}")


@archive.command("browse")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="0: any free port.")
@click.option("--no-open", is_flag=True, help="Do not open a web browser.")
@friendly
def archive_browse(run_dir: Path, port: int, no_open: bool) -> None:
    """Open the archive read-only in Datasette on 127.0.0.1, with described tables and canned
    queries (best problems, lineage, votes, a step's groups, label audit, evals)."""
    from .browse import browse

    browse(run_dir, port=port, open_browser=not no_open)


# --------------------------------------------------------------------------- eval / report / export
@main.command("eval")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--model", default=None, help="Evaluate this GGUF (e.g. a merged export) instead of a run.")
@click.option("--benchmark", default="gsm8k-100", show_default=True,
              help="gsm8k-100 | gsm-symbolic | arithmetic-easy | arithmetic-medium | arithmetic-hard "
                   "(= arithmetic, 3-digit) | a JSONL file with question/answer.")
@click.option("--n", "n_questions", type=int, default=20, show_default=True, help="Questions.")
@click.option("-k", "k", default=4, show_default=True, help="Samples per question (pass@1, maj@k).")
@click.option("--max-tokens", default=384, show_default=True)
@click.option("--temperature", default=0.6, show_default=True)
@click.option("--top-p", default=0.95, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-greedy", is_flag=True, help="Skip the greedy pass.")
@click.option("--step", "step", default="latest", show_default=True, help="base, latest or a step number.")
@click.option("--compare", default=None,
              help="Two targets A,B (e.g. base,latest): B - A per metric with a paired 95% interval, "
                   "exact sign-test and permutation p-values. With several runs (training seeds), "
                   "also pooled over them.")
@click.option("--kinds", default=None,
              help="With --compare: run the paired tests on the questions of these kinds only, comma-separated "
                   "(e.g. add-sub,mix,word of arithmetic-medium: its two-operation questions).")
@click.option("--json", "as_json", is_flag=True,
              help="Print only a JSON object: per-target metrics and, with --compare, the paired comparison.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for llama.cpp (default: all).")
@friendly
def eval_cmd(run_dirs: tuple[Path, ...], model: str | None, benchmark: str, n_questions: int, k: int,
             max_tokens: int, temperature: float, top_p: float, seed: int, no_greedy: bool, step: str,
             compare: str | None, kinds: str | None, as_json: bool, threads: int | None) -> None:
    """Evaluate a run's adapters (stored in its archive) or a GGUF on held-out benchmarks.

    A run is evaluated with the prompt style stored in its recipe (model.prompt_style:
    chat template or few-shot completion) and its method's solver prompt when the method
    defines one, as its training asked questions. Several RUN_DIRS (the same recipe
    trained with different seeds) need --compare: each run is compared on its own, then
    the evidence is pooled over the runs with the question as the unit.
    """
    from .evaluate import EvalConfig
    from .evaluate.runs import chosen_kinds, comparison, evaluate_model, evaluate_runs, format_comparison, jsonable

    cfg = EvalConfig(benchmark=benchmark, n_questions=n_questions, k=k, temperature=temperature, top_p=top_p,
                     max_tokens=max_tokens, seed=seed, greedy=not no_greedy)
    names = compare.split(",") if compare else [step]
    if compare and len(names) != 2:
        raise MinisirError(f"--compare {compare}: give exactly two targets, e.g. --compare base,latest")
    if kinds and not compare:
        raise MinisirError("--kinds needs --compare A,B: it picks the questions the paired test runs on")
    only = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else []
    if only:
        chosen_kinds(cfg, only)
    if len(run_dirs) > 1 and not compare:
        raise MinisirError(f"{len(run_dirs)} run directories need --compare A,B (e.g. base,latest) to pool over them")
    if not run_dirs:
        if model is None:
            raise MinisirError("pass a run directory or --model GGUF to evaluate")
        if compare:
            raise MinisirError("--compare needs a run directory (it compares the run's base model and steps)")
        runs = [evaluate_model(model, cfg, threads)]
    else:
        runs = evaluate_runs(run_dirs, cfg, names, threads)
    cmp = comparison(runs, names, cfg, compare=bool(compare), only_kinds=only)
    click.echo(json.dumps(jsonable(cmp), indent=2, default=str) if as_json else format_comparison(runs, cmp))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder (default RUN_DIR/report).")
@click.option("--beside", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Another run whose held-out curve is drawn with this one's against minutes of step time (repeatable).")
@friendly
def report(run_dir: Path, out: Path | None, beside: tuple[Path, ...]) -> None:
    """Write a Markdown summary and PNG plots of a run."""
    from .report import write_report

    click.echo(f"report written to {write_report(run_dir, out, list(beside))}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--qtype", default="f16", show_default=True, help="f32, f16, or a llama.cpp quant type (q8_0, q4_k_m).")
@click.option("--adapter-only", is_flag=True,
              help="Write only the LoRA, as a PEFT directory OUT (transformers, PEFT, vLLM) with a model card.")
@friendly
def export(run_dir: Path, out: Path, qtype: str, adapter_only: bool) -> None:
    """Merge the run's latest LoRA into the model and write a GGUF that llama.cpp/Ollama run,
    with an Ollama Modelfile beside it (chat template and stop tokens); or, with
    --adapter-only, write the LoRA itself as a PEFT directory."""
    from .archive import ARCHIVE_NAME, Archive
    from .share import export_adapter, trained_state

    if adapter_only:
        trained, last = export_adapter(run_dir, out)
        if trained != last:
            click.echo(f"step {last} trained nothing: exporting step {trained}, the newest step that trained", err=True)
        click.echo(f"LoRA of step {trained} written to {out} (PEFT: adapter_config.json, "
                   "adapter_model.safetensors, README.md)")
        return
    if out.is_dir():
        raise MinisirError(f"{out} is a directory; name the .gguf file to write, or pass --adapter-only")
    from .assets import resolve_hf_dir
    from .evaluate.runs import run_model
    from .export import export_merged
    from .ollama import write_modelfile
    from .trainer import GRPOTrainer, TrainerConfig

    with Archive.open(run_dir / ARCHIVE_NAME, readonly=True) as arc:
        gguf, _, recipe = run_model(arc)
        last = arc.last_step()
    state, trained = trained_state(run_dir, last)
    if trained != last:
        click.echo(f"step {last} trained nothing: exporting step {trained}, the newest step that trained", err=True)
    trainer = GRPOTrainer(TrainerConfig(**recipe["trainer"]), gguf, resolve_hf_dir(recipe["model"].get("hf_dir")))
    trainer.load_state(state)
    path = export_merged(trainer.model, out, tokenizer_gguf=gguf, qtype=qtype)
    click.echo(f"merged model of step {trained} written to {path}")
    modelfile = write_modelfile(path)
    click.echo(f"Ollama: ollama create NAME -f {modelfile}")


main.add_command(bench)


if __name__ == "__main__":  # pragma: no cover
    main()
