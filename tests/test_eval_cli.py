"""`minisir eval` on a run directory with a fake sampler: prompt style, --compare, --json.

No model is loaded: the sampler is replaced by one that answers right only when an
adapter is set, so every number below is fixed by the test, not by sampling.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import minisir.assets
import minisir.evaluate.run
import minisir.sampler
from minisir.archive import Archive
from minisir.cli import main
from minisir.evaluate.runs import method_prompt
from minisir.methods import METHODS
from minisir.methods.opensir_prompts import student_prompt

CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<model>"
QUESTIONS = {f"What is {i} + {i}?": str(2 * i) for i in range(1, 11)}


class _Completion:
    def __init__(self, text: str):
        self.text, self.token_ids, self.finish_reason = text, [1, 2], "stop"


class FakeSampler:
    """Right answer with an adapter set, a wrong one without; records prompts and stops."""

    chat_template = CHAT_TEMPLATE
    n_parallel = 4
    seen: list[dict] = []

    def __init__(self, path, n_ctx=0, **kwargs):
        self.adapter = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def set_adapter(self, path, scale=1.0):
        self.adapter = path

    def clear_adapter(self):
        self.adapter = None

    def generate(self, prompts, n=1, stop=None, **kwargs):
        FakeSampler.seen.append({"prompts": list(prompts), "stop": stop, "adapter": self.adapter})
        out = []
        for p in prompts:
            (question,) = [q for q in QUESTIONS if q in p]
            answer = QUESTIONS[question] if self.adapter else "0"
            out.append([_Completion(f"so \\boxed{{{answer}}}") for _ in range(n)])
        return out


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    FakeSampler.seen = []
    monkeypatch.setattr(minisir.sampler, "Sampler", FakeSampler)
    monkeypatch.setattr(minisir.assets, "resolve_gguf", lambda spec: tmp_path / "model.gguf")
    monkeypatch.setattr(minisir.evaluate.run, "adapter_for_step", lambda arc, step: tmp_path / f"step-{step}.gguf")
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS.items()))

    def make(style: str, method: str = "no-such-method") -> tuple[Path, Path]:
        d = tmp_path / f"run-{style}"
        d.mkdir()
        with Archive.open(d) as arc:
            arc.ensure_run({"model": {"gguf": "model.gguf", "prompt_style": style}, "method": {"name": method}},
                           {}, 0)
        return d, bench

    return make


def _invoke(*args: str):
    res = CliRunner().invoke(main, ["eval", *args])
    assert res.exit_code == 0, res.output
    return res


def test_eval_uses_the_runs_chat_style_and_compare_json(run_dir):
    d, bench = run_dir("chat")
    res = _invoke(str(d), "--benchmark", str(bench), "--n", "10", "-k", "2", "--no-greedy",
                  "--compare", "base,1", "--json")
    out = json.loads(res.stdout)
    assert [r["label"] for r in out["results"]] == ["base", "step 1"]
    assert [r["step"] for r in out["results"]] == [None, 1]
    assert out["results"][0]["config"]["prompt_style"] == "chat"
    pass1 = out["compare"]["metrics"]["pass@1"]
    assert (out["compare"]["a"], out["compare"]["b"]) == ("step 1", "base")
    assert pass1["diff"] == 1.0 and pass1["n"] == 10 and pass1["wins"] == 10
    assert pass1["p_sign"] == pytest.approx(2 / 1024) and pass1["p_perm"] == pytest.approx(2 / 1024)
    assert pass1["perm_method"] == "exact" and pass1["significant"] is True
    assert pass1["ci"] == [1.0, 1.0]
    # the run's recipe says chat: every prompt went through the chat template, no stop strings
    assert all(p.startswith("<user>") and p.endswith("<model>") for call in FakeSampler.seen for p in call["prompts"])
    assert all(call["stop"] == [] for call in FakeSampler.seen)
    assert [c["adapter"] is not None for c in FakeSampler.seen] == [False] * 3 + [True] * 3  # 10 q in chunks of 4


def test_eval_uses_the_runs_completion_style_and_prints_p_values(run_dir):
    d, bench = run_dir("completion")  # the GGUF has a chat template, but the run trained without it
    res = _invoke(str(d), "--benchmark", str(bench), "--n", "10", "-k", "1", "--compare", "base,1")
    first = FakeSampler.seen[0]
    assert first["prompts"][0] == student_prompt(next(iter(QUESTIONS)))  # few-shot completion prompt
    assert first["stop"] and "<user>" not in first["prompts"][0]
    assert "p perm" in res.stdout and "p sign" in res.stdout and "0.002 *" in res.stdout
    with Archive.open(d) as arc:
        stored = arc.evals()
    assert len(stored) == 2 and {e["metrics"]["config"]["prompt_style"] for e in stored} == {"completion"}


def test_eval_auto_style_follows_the_gguf_and_compare_needs_two(run_dir):
    d, bench = run_dir("auto")
    _invoke(str(d), "--benchmark", str(bench), "--n", "2", "-k", "1", "--step", "base", "--json")
    assert FakeSampler.seen[0]["prompts"][0].startswith("<user>")
    res = CliRunner().invoke(main, ["eval", str(d), "--benchmark", str(bench), "--compare", "base,1,2"])
    assert res.exit_code == 2 and "exactly two" in res.output


def test_method_prompt_hook(monkeypatch):
    """A method module with eval_prompt/eval_stop supplies the eval's prompt; others get the default."""
    fake = types.ModuleType("minisir.methods.fakemethod")
    fake.eval_prompt = lambda q, chat: f"Q: {q}"
    fake.eval_stop = lambda is_chat: [] if is_chat else ["\nQ:"]
    monkeypatch.setitem(sys.modules, "minisir.methods.fakemethod", fake)
    monkeypatch.setitem(METHODS, "fakemethod", ("minisir.methods.fakemethod", "FakeConfig"))
    prompt, stop = method_prompt("fakemethod", None)
    assert prompt("x", None) == "Q: x" and stop == ["\nQ:"]
    assert method_prompt("fakemethod", lambda m: "")[1] == []
    assert method_prompt("no-such-method", None) == (None, None)
    assert method_prompt(None, None) == (None, None)


@pytest.mark.parametrize("target, needle", [("5", "has no step 5 (last step 0)"), ("0", "is missing")])
def test_every_target_is_checked_before_any_sampling(tmp_path, monkeypatch, target, needle):
    """A missing step or adapter file fails in one line before a sampler exists (the base model was
    sampled for minutes before "no step 19")."""
    started = []
    monkeypatch.setattr(minisir.sampler, "Sampler", lambda *a, **k: started.append(a) or FakeSampler(*a, **k))
    monkeypatch.setattr(minisir.assets, "resolve_gguf", lambda spec: tmp_path / "model.gguf")
    d = tmp_path / "run"
    with Archive.open(d) as arc:
        arc.ensure_run({"model": {"gguf": "model.gguf"}, "method": {"name": "sqlm"}}, {}, 0)
        arc.commit_step({"step": 0}, [], [], {"path": "adapters/step-000000.gguf", "sha256": "ab" * 32})
    res = CliRunner().invoke(main, ["eval", str(d), "--compare", f"base,{target}", "--n", "2"])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    assert started == []
