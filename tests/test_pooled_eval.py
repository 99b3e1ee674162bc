"""Evidence pooled over training seeds (minisir.pooled) and `minisir eval RUN1 RUN2 ... --compare`.

Synthetic per-question scores only: every number below is fixed by the test, no model is loaded.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import minisir.assets
import minisir.evaluate as E
import minisir.evaluate.run
import minisir.sampler
from minisir.archive import Archive
from minisir.cli import main
from minisir.errors import MinisirError
from minisir.pooled import (by_kind, format_by_kind, format_pooled, format_runs, pooled_by_kind, pooled_compare,
                            question_kinds, restrict)


def _result(pass1, maj=None, ids=None, kinds=None) -> E.EvalResult:
    ids = ids or [f"q{i}" for i in range(len(pass1))]
    maj = pass1 if maj is None else maj
    recs = [{"id": i, "pass@1": p, "maj@k": m} for i, p, m in zip(ids, pass1, maj)]
    for r, kind in zip(recs, kinds or []):
        r["kind"] = kind
    return E.EvalResult({"benchmark": "b"}, {}, recs)


def test_identical_runs_pool_to_the_single_run_comparison():
    base, trained = _result([0, 0, 0.5, 0.5, 1]), _result([1, 0, 0.5, 1, 1])
    one = E.compare(trained, base)["pass@1"]
    out = pooled_compare([(base, trained)] * 3)
    pooled = out["pooled"]["pass@1"]
    assert out["n_seeds"] == 3 and out["n_questions"] == 5 and len(out["runs"]) == 3
    assert out["runs"][0]["pass@1"] == one
    for key in ("a", "b", "diff", "p_sign", "p_perm", "wins", "losses", "ties", "n"):
        assert pooled[key] == pytest.approx(one[key]), key
    assert pooled["ci"] == pytest.approx(one["ci"])
    assert pooled["seed_diffs"] == pytest.approx([one["diff"]] * 3)
    assert pooled["seed_diff_min"] == pooled["seed_diff_max"] == pytest.approx(0.3)


def test_pooled_unit_is_the_question_not_question_times_seed():
    """3 seeds, 10 questions, every seed gains on every question: 10 units, not 30."""
    pairs = [(_result([0.0] * 10), _result([1.0] * 10)) for _ in range(3)]
    pooled = pooled_compare(pairs)["pooled"]["pass@1"]
    assert pooled["n"] == 10 and pooled["n_seeds"] == 3
    assert pooled["diff"] == 1.0 and pooled["wins"] == 10
    # exact over the 2**10 sign patterns of 10 per-question means: only all + and all - reach 10
    assert pooled["p_perm"] == pytest.approx(2 / 2**10) and pooled["p_sign"] == pytest.approx(2 / 2**10)
    assert pooled["perm_method"] == "exact" and pooled["significant"] is True  # 30 units would say 2 / 2**30


def test_seeds_gaining_on_the_same_questions_give_a_small_p():
    # each seed gains on q0..q7 by a different amount and ties on q8, q9
    base = [0.25] * 10
    pairs = [(_result(base), _result([0.25 + g] * 8 + [0.25, 0.25])) for g in (0.25, 0.5, 0.75)]
    out = pooled_compare(pairs)
    pooled = out["pooled"]["pass@1"]
    assert pooled["diff"] == pytest.approx(0.4) and pooled["ties"] == 2 and pooled["wins"] == 8
    assert pooled["p_perm"] == pytest.approx(2 / 2**8) and pooled["p_sign"] == pytest.approx(2 / 2**8)
    assert pooled["seed_diffs"] == pytest.approx([0.2, 0.4, 0.6])
    assert (pooled["seed_diff_min"], pooled["seed_diff_max"]) == pytest.approx((0.2, 0.6))
    text = format_pooled(out, "latest", "base")
    assert "3 seeds x 10 questions" in text and "+20.0, +40.0, +60.0" in text
    runs = format_runs(["s0", "s1", "s2"], out["runs"])
    assert runs.count("\n| s") == 3 and "+20.0" in runs


def test_seeds_that_cancel_give_diff_0_and_p_1():
    base = _result([0.5] * 6)
    up, down = _result([1.0] * 6), _result([0.0] * 6)
    out = pooled_compare([(base, up), (base, down)])
    pooled = out["pooled"]["pass@1"]
    assert pooled["diff"] == 0 and pooled["p_perm"] == 1.0 and pooled["p_sign"] == 1.0
    assert pooled["ties"] == 6 and pooled["significant"] is False
    assert (pooled["seed_diff_min"], pooled["seed_diff_max"]) == (-0.5, 0.5)
    assert out["runs"][0]["pass@1"]["diff"] == 0.5 and out["runs"][1]["pass@1"]["diff"] == -0.5


def test_by_kind_by_hand():
    kinds = ["add", "add", "mul", "word"]
    base1 = _result([0, 0.5, 1, 0], kinds=kinds)
    trained1 = _result([1, 0.5, 0.5, 0])
    base2 = _result([0, 0, 1, 0])
    trained2 = _result([1, 1, 1, 1])
    table = pooled_by_kind([(base1, trained1), (base2, trained2)])  # kinds come from base1's records
    # add: base (0 + 0.5 + 0 + 0) / 4 = 0.125, trained (1 + 0.5 + 1 + 1) / 4 = 0.875
    # p: per question, the mean over seeds of trained - base: add q0 (1 + 1) / 2, q1 (0 + 0.5) / 2; both up,
    # so 2 of the 4 sign patterns are as extreme
    assert table["add"]["pass@1"] == pytest.approx({"base": 0.125, "trained": 0.875, "diff": 0.75, "n": 2,
                                                    "p_perm": 0.5})
    # mul: base (1 + 1) / 2, trained (0.5 + 1) / 2; one question, one sign flip either way
    assert table["mul"]["pass@1"] == pytest.approx({"base": 1.0, "trained": 0.75, "diff": -0.25, "n": 1,
                                                    "p_perm": 1.0})
    assert table["word"]["maj@k"] == pytest.approx({"base": 0.0, "trained": 0.5, "diff": 0.5, "n": 1, "p_perm": 1.0})
    assert list(table) == ["add", "mul", "word"]
    one = by_kind(base2, trained2, {"q0": "x", "q1": "x", "q2": "y"})  # an explicit map; q3 has no kind
    assert one["x"]["pass@1"] == pytest.approx({"base": 0.0, "trained": 1.0, "diff": 1.0, "n": 2, "p_perm": 0.5})
    assert set(one) == {"x", "y"} and by_kind(base2, trained2) == {}
    text = format_by_kind(table, "base", "step 5")
    assert "| add | 2 | 12.5 / 87.5 (+75.0, p 0.5" in text and "| mul | 1 | 100.0 / 75.0 (-25.0, p 1" in text


def test_a_kinds_p_is_the_paired_test_on_its_questions_alone():
    """Per kind, the p-value is compare()'s on that kind's questions: a kind that gains everywhere is
    significant on its own, while a kind that gains on one question of many is not."""
    kinds = ["up"] * 8 + ["flat"] * 8
    base = _result([0.0] * 16, kinds=kinds)
    trained = _result([1.0] * 8 + [1.0] + [0.0] * 7)
    table = by_kind(base, trained)
    up_ids = {f"q{i}" for i in range(8)}
    alone = E.compare(restrict(trained, up_ids), restrict(base, up_ids))["pass@1"]
    assert table["up"]["pass@1"]["p_perm"] == pytest.approx(alone["p_perm"]) == pytest.approx(2 / 2**8)
    assert table["flat"]["pass@1"]["p_perm"] == pytest.approx(1.0)  # 1 of 8 up: half the sign patterns tie it
    assert restrict(trained, up_ids)["questions"] == [{"id": f"q{i}", "pass@1": 1.0, "maj@k": 1.0} for i in range(8)]


def test_question_kinds_of_arithmetic_and_none_elsewhere():
    kinds = question_kinds("arithmetic-easy", 10, 0)
    assert len(kinds) == 10 and set(kinds.values()) == set(E.EASY_KINDS)
    assert kinds == {q.id: q.meta["kind"] for q in E.load_benchmark("arithmetic-easy", 10, 0)}
    assert question_kinds("gsm8k-100", 10, 0) == {}


def test_question_kinds_of_a_users_jsonl(tmp_path):
    import json

    rows = [{"id": "a", "question": "1+1?", "answer": 2, "kind": "add"},
            {"id": "b", "question": "Units?", "answer": 3, "category": "units", "level": 2},
            {"id": "c", "question": "3*3?", "answer": 9}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert question_kinds(str(path)) == {"a": "add", "b": "units"}  # "kind", else "category"; none: no kind
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "1+1?", "answer": 2}))
    assert question_kinds(str(plain)) == {}


def test_pooled_refuses_runs_without_shared_questions_or_results():
    a, b = _result([0, 1]), _result([1, 1])
    other = _result([0, 1], ids=["x0", "x1"])
    with pytest.raises(MinisirError, match="share no question ids"):
        pooled_compare([(a, b), (other, other)])
    with pytest.raises(MinisirError, match="run 2 lacks a trained result"):
        pooled_compare([(a, b), (a, None)])
    with pytest.raises(MinisirError, match="no runs"):
        pooled_compare([])


# ------------------------------------------------------------------ CLI
def test_several_runs_need_compare(tmp_path):
    dirs = [tmp_path / f"seed{i}" for i in range(2)]
    for d in dirs:
        d.mkdir()
    res = CliRunner().invoke(main, ["eval", *map(str, dirs)])
    assert res.exit_code == 2
    assert res.output.strip() == "error: 2 run directories need --compare A,B (e.g. base,latest) to pool over them"


class _Completion:
    def __init__(self, text: str):
        self.text, self.token_ids, self.finish_reason = text, [1], "stop"


class _FakeSampler:
    """Answers "What is i + i?" right only with an adapter set."""

    chat_template = None
    n_parallel = 4

    def __init__(self, path, **kwargs):
        self.adapter = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def set_adapter(self, path, scale=1.0):
        self.adapter = path

    def clear_adapter(self):
        self.adapter = None

    def generate(self, prompts, n=1, **kwargs):
        out = []
        for p in prompts:
            i = int(p.rsplit("What is ", 1)[1].split(" ")[0])
            out.append([_Completion(f"\\boxed{{{2 * i if self.adapter else 0}}}") for _ in range(n)])
        return out


def _runs(tmp_path, monkeypatch, models: list[str], kinds: list[str] | None = None) -> tuple[list[str], str]:
    monkeypatch.setattr(minisir.sampler, "Sampler", _FakeSampler)
    monkeypatch.setattr(minisir.assets, "resolve_gguf", lambda spec: tmp_path / str(spec))
    monkeypatch.setattr(minisir.evaluate.run, "adapter_for_step", lambda arc, step: tmp_path / f"step-{step}.gguf")
    bench = tmp_path / "bench.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": 2 * i} for i in range(1, 7)]
    for row, kind in zip(rows, kinds or []):
        row["kind"] = kind
    bench.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dirs = []
    for s, gguf in enumerate(models):
        d = tmp_path / f"seed{s}"
        d.mkdir()
        with Archive.open(d) as arc:
            arc.ensure_run({"model": {"gguf": gguf, "prompt_style": "completion"}, "method": {"name": "x"}}, {}, s)
        dirs.append(str(d))
    return dirs, str(bench)


def test_several_runs_pool_in_json_and_text(tmp_path, monkeypatch):
    dirs, bench = _runs(tmp_path, monkeypatch, ["m.gguf"] * 3)
    args = ["eval", *dirs, "--benchmark", bench, "--n", "6", "-k", "1", "--no-greedy", "--compare", "base,1"]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["run"] for r in out["runs"]] == dirs
    assert out["runs"][0]["compare"]["metrics"]["pass@1"]["diff"] == 1.0
    pooled = out["pooled"]
    assert (pooled["a"], pooled["b"], pooled["n_seeds"], pooled["n_questions"]) == ("step 1", "base", 3, 6)
    assert pooled["metrics"]["pass@1"]["n"] == 6 and pooled["metrics"]["pass@1"]["p_perm"] == pytest.approx(2 / 64)
    assert out["by_kind"]["kinds"] == {}  # a JSONL benchmark has no kinds
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "Pooled over 3 seeds x 6 questions" in res.stdout and res.stdout.count("seed") >= 3


def test_several_runs_must_share_the_model(tmp_path, monkeypatch):
    dirs, bench = _runs(tmp_path, monkeypatch, ["m.gguf", "other.gguf"])
    res = CliRunner().invoke(main, ["eval", *dirs, "--benchmark", bench, "--compare", "base,1"])
    assert res.exit_code == 2 and "must share the base model" in res.output and len(res.output.splitlines()) == 1


def test_kinds_runs_the_paired_test_on_those_kinds_questions(tmp_path, monkeypatch):
    dirs, bench = _runs(tmp_path, monkeypatch, ["m.gguf"], kinds=["a", "a", "a", "b", "b", "b"])
    args = ["eval", dirs[0], "--benchmark", bench, "--n", "6", "-k", "1", "--no-greedy", "--compare", "base,1", "--json"]
    whole = json.loads(CliRunner().invoke(main, args).stdout)["compare"]["metrics"]["pass@1"]
    res = CliRunner().invoke(main, [*args, "--kinds", "a"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    only = out["compare"]["metrics"]["pass@1"]
    assert (whole["n"], only["n"]) == (6, 3) and out["compare"]["kinds"] == ["a"]
    assert (whole["p_perm"], only["p_perm"]) == pytest.approx((2 / 2**6, 2 / 2**3))
    assert list(out["by_kind"]["kinds"]) == ["a"]
    assert out["results"][0]["metrics"]["n_questions"] == 6  # the targets' own metrics stay whole-benchmark


def test_a_kind_the_benchmark_lacks_fails_before_any_sampling(tmp_path, monkeypatch):
    dirs, bench = _runs(tmp_path, monkeypatch, ["m.gguf"], kinds=["a", "a", "a", "b", "b", "b"])

    def never(*args, **kwargs):
        raise AssertionError("sampled before checking --kinds")

    monkeypatch.setattr(_FakeSampler, "generate", never)
    base = ["eval", dirs[0], "--benchmark", bench, "--n", "6", "-k", "1", "--no-greedy"]
    res = CliRunner().invoke(main, [*base, "--compare", "base,1", "--kinds", "a,c"])
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1
    assert "--kinds: c is not a kind of" in res.output and "its kinds: a, b" in res.output
    res = CliRunner().invoke(main, [*base, "--kinds", "a"])
    assert res.exit_code == 2 and "--kinds needs --compare" in res.output
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "What is 1 + 1?", "answer": 2}) + "\n")
    res = CliRunner().invoke(main, ["eval", dirs[0], "--benchmark", str(plain), "--n", "1", "--compare", "base,1",
                                    "--kinds", "a"])
    assert res.exit_code == 2 and "has no question kinds" in res.output
