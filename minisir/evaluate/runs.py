"""Evaluating training runs, as `minisir eval` does, callable from Python.

Opens each run's archive, checks every target before any sampling, asks the questions with each
run's own prompt style and its method's solver prompt, and, for several runs of one recipe (training
seeds), pools the paired evidence over them with the question as the unit:

    from minisir.evaluate import EvalConfig
    from minisir.evaluate.runs import evaluate_runs, comparison
    runs = evaluate_runs(["runs/a", "runs/b"], EvalConfig(benchmark="arithmetic-easy", n_questions=200),
                         ["base", "latest"])
    print(comparison(runs, ["base", "latest"], EvalConfig(benchmark="arithmetic-easy", n_questions=200)))
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ArchiveError, MinisirError
from . import run as evaluation
from .run import EvalConfig, PromptFn, eval_cache_dir, run_eval
from .stats import EvalResult

Target = tuple[str, int | None]  # (label, step; None for the base model)


@dataclass
class RunEval:
    """One evaluated run (run_dir None: a bare GGUF) with its targets' results, in order."""

    run_dir: Path | None
    targets: list[Target]
    results: list[EvalResult]


def run_model(arc: Any) -> tuple[Path, str, dict]:
    """The GGUF, prompt style and recipe a run was made with."""
    from .. import assets

    info = arc.run_info()
    if info is None:
        raise ArchiveError(f"{arc.path} holds no run yet; start one with `minisir run RECIPE`")
    recipe = info["recipe"]
    return assets.resolve_gguf(recipe["model"]["gguf"]), recipe["model"].get("prompt_style", "auto"), recipe


def method_prompt(name: str | None, chat: Any) -> tuple[PromptFn | None, list[str] | None]:
    """(prompt, stop) of a method's solver, which the eval asks its questions with, or (None, None) for
    an unknown method (the eval's default prompt). The one lookup: `minisir run`'s in-run eval and
    `minisir eval` both ask through it, so a run is measured the way its solvers were trained."""
    from ..methods import method_module

    try:
        mod = method_module(name) if name else None
    except (ImportError, ValueError):
        mod = None
    prompt, stop_fn = getattr(mod, "eval_prompt", None), getattr(mod, "eval_stop", None)
    if prompt is None:
        return None, None
    return prompt, (list(stop_fn(chat is not None)) if stop_fn is not None else None)


def eval_targets(arc: Any, names: Sequence[str]) -> list[Target]:
    """("base" | "latest" | step number) -> (label, step or None for the base model).

    Each step's adapter is looked up here, so a missing step or adapter file fails at once, before
    any sampling (a base model sampled for minutes, then "no step 19", was the old order)."""
    out: list[Target] = []
    for name in names:
        name = name.strip()
        if name == "base":
            out.append(("base", None))
        elif name == "latest":
            latest = arc.latest_adapter()
            if latest is None:
                raise MinisirError(f"{arc.path} has no adapter yet: run a step first or evaluate base")
            out.append((f"step {latest['step']}", int(latest["step"])))
        elif name.isdigit():
            out.append((f"step {name}", int(name)))
        else:
            raise MinisirError(f"--step/--compare: {name!r} is not base, latest or a step number")
        if out[-1][1] is not None:
            evaluation.adapter_for_step(arc, out[-1][1])  # one line: no such step, no adapter, file missing
    return out


def evaluate_model(model: str | Path, cfg: EvalConfig, threads: int | None = None) -> RunEval:
    """A bare GGUF (a merged export, say), asked with its own chat template when it has one."""
    from .. import assets
    from .. import sampler as sampling
    from ..prompting import choose_style

    gguf = assets.resolve_gguf(str(model))
    with sampling.Sampler(gguf, n_ctx=max(8192, 4 * cfg.max_tokens), n_threads=threads) as sampler:
        result = run_eval(gguf, cfg, sampler=sampler, chat=choose_style("auto", sampler.chat_template), label=gguf.name)
    return RunEval(None, [(gguf.name, None)], [result])


def evaluate_runs(run_dirs: Sequence[str | Path], cfg: EvalConfig, names: Sequence[str],
                  threads: int | None = None) -> list[RunEval]:
    """Each run's targets (`names`: base, latest or step numbers), every one checked before any sampling;
    results are stored in each run's archive and reused from the eval cache."""
    from .. import sampler as sampling
    from ..archive import ARCHIVE_NAME, Archive
    from ..prompting import choose_style

    with ExitStack() as stack:
        opened = []  # (run_dir, archive, gguf, style, recipe, targets)
        for run_dir in map(Path, run_dirs):
            arc = stack.enter_context(Archive.open(run_dir / ARCHIVE_NAME if run_dir.is_dir() else run_dir))
            gguf, style, recipe = run_model(arc)
            opened.append((run_dir, arc, gguf, style, recipe, eval_targets(arc, names)))
        for run_dir, _, other, *_ in opened[1:]:
            if Path(other).resolve() != Path(opened[0][2]).resolve():
                raise MinisirError(f"{run_dir} was trained from {other}, {opened[0][0]} from {opened[0][2]}: "
                                   "pooled runs must share the base model")
        runs = []
        with sampling.Sampler(opened[0][2], n_ctx=max(8192, 4 * cfg.max_tokens), n_threads=threads) as sampler:
            for run_dir, arc, gguf, style, recipe, targets in opened:
                chat = choose_style(style, sampler.chat_template)  # the run's own prompt style
                prompt, stop = method_prompt((recipe.get("method") or {}).get("name"), chat)
                results = [run_eval(gguf, cfg, archive=arc, step=target, sampler=sampler, chat=chat, label=label,
                                    prompt=prompt, stop=stop, cache_dir=eval_cache_dir())
                           for label, target in targets]
                runs.append(RunEval(run_dir, targets, results))
    return runs


def comparison(runs: list[RunEval], names: Sequence[str], cfg: EvalConfig, compare: bool = True,
               only_kinds: Sequence[str] = ()) -> dict[str, Any]:
    """What `minisir eval --json` prints: each target's metrics and, with `compare` (two targets), the
    paired difference and accuracy by question kind; over several runs, each run's and the pooled one.
    `only_kinds` runs the paired tests on the questions of those kinds alone (the targets' own metrics
    stay whole-benchmark)."""
    from ..pooled import by_kind, pooled_by_kind, pooled_compare, question_kinds, restrict
    from .stats import compare as diff

    kinds = question_kinds(cfg.benchmark, cfg.n_questions, cfg.seed) if compare else {}
    pairs = [(r.results[0], r.results[1]) for r in runs] if compare else []
    if only_kinds:
        kinds = chosen_kinds(cfg, only_kinds)
        pairs = [(restrict(a, set(kinds)), restrict(b, set(kinds))) for a, b in pairs]
    if len(runs) > 1:
        base, trained = _pooled_labels(runs, names)
        pooled = pooled_compare(pairs, seed=cfg.seed)
        return {
            "runs": [{"run": str(r.run_dir), "results": _results(r),
                      "compare": {"a": r.targets[1][0], "b": r.targets[0][0], "diff": "a - b", "metrics": own}}
                     for r, own in zip(runs, pooled["runs"])],
            "pooled": {"a": trained, "b": base, "diff": "a - b", "n_seeds": pooled["n_seeds"],
                       "n_questions": pooled["n_questions"], "kinds": list(only_kinds), "metrics": pooled["pooled"]},
            "by_kind": {"base": base, "trained": trained,
                        "kinds": pooled_by_kind(pairs, kinds, seed=cfg.seed) if kinds else {}},
        }
    (run,) = runs
    out: dict[str, Any] = {"results": _results(run)}
    if compare:
        (a, b), = pairs
        out["compare"] = {"a": run.targets[1][0], "b": run.targets[0][0], "diff": "a - b",
                          "kinds": list(only_kinds), "metrics": diff(b, a, seed=cfg.seed)}
        if kinds and (table := by_kind(a, b, kinds, seed=cfg.seed)):
            out["by_kind"] = {"base": run.targets[0][0], "trained": run.targets[1][0], "kinds": table}
    return out


def chosen_kinds(cfg: EvalConfig, only: Sequence[str]) -> dict[str, str]:
    """Question id -> kind for the questions of the kinds in `only`, checked before any sampling: a
    misspelt kind is one line naming the benchmark's kinds, not an error after minutes of sampling."""
    from ..pooled import question_kinds

    kinds = question_kinds(cfg.benchmark, cfg.n_questions, cfg.seed)
    if not kinds:
        raise MinisirError(f"--kinds: {cfg.benchmark} has no question kinds (the arithmetic levels have them, "
                           "and a JSONL file whose rows carry \"kind\")")
    known = sorted(set(kinds.values()))
    if unknown := [k for k in only if k not in known]:
        raise MinisirError(f"--kinds: {', '.join(unknown)} is not a kind of {cfg.benchmark}; its kinds: "
                           f"{', '.join(known)}")
    return {q: k for q, k in kinds.items() if k in only}


def format_comparison(runs: list[RunEval], cmp: dict[str, Any]) -> str:
    """`comparison`'s object as the tables `minisir eval` prints."""
    from ..pooled import format_by_kind, format_pooled, format_runs
    from .stats import format_compare, format_table

    parts = []
    if "pooled" in cmp:
        pooled = cmp["pooled"]
        if pooled.get("kinds"):
            parts.append(f"Paired over the questions of kinds {', '.join(pooled['kinds'])} only:")
        parts += [f"{pooled['a']} - {pooled['b']}, each run on its own:",
                  format_runs([str(r.run_dir) for r in runs], [run["compare"]["metrics"] for run in cmp["runs"]]),
                  format_pooled({"n_seeds": pooled["n_seeds"], "n_questions": pooled["n_questions"],
                                 "pooled": pooled["metrics"]}, pooled["a"], pooled["b"])]
    else:
        parts.append(format_table(runs[0].results))
        if "compare" in cmp:
            if cmp["compare"].get("kinds"):
                parts.append(f"Paired over the questions of kinds {', '.join(cmp['compare']['kinds'])} only:")
            parts.append(format_compare(cmp["compare"]["metrics"], cmp["compare"]["a"], cmp["compare"]["b"]))
    if cmp.get("by_kind", {}).get("kinds"):
        parts.append(format_by_kind(cmp["by_kind"]["kinds"], cmp["by_kind"]["base"], cmp["by_kind"]["trained"]))
    return "\n\n".join(parts)


def jsonable(x: Any) -> Any:
    """NaN (an undefined interval) -> null, so --json output is strict JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def _results(run: RunEval) -> list[dict[str, Any]]:
    return [{"label": r.label, "step": t, "config": r.config, "metrics": r.metrics}
            for r, (_, t) in zip(run.results, run.targets)]


def _pooled_labels(runs: list[RunEval], names: Sequence[str]) -> tuple[str, str]:
    """"step 40" when every run compares the same step, else what was asked ("latest")."""
    labels = []
    for i, name in enumerate(names):
        seen = {r.targets[i][0] for r in runs}
        labels.append(seen.pop() if len(seen) == 1 else name.strip())
    return labels[0], labels[1]
