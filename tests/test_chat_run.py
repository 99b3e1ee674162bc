"""Chat models end to end: `minisir run` with model.prompt_style: chat, for both methods.

The model is a tiny random Qwen3 whose GGUF carries a ChatML template (tokenizer.chat_template)
and <|im_end|> as end of turn; its <|im_end|> output row points along its mean final hidden
state, so it ends turns now and then. Its text is random: the tests assert on plumbing only.
- every prompt the sampler gets went through the chat template (its special tokens parsed);
- no completion-mode stop string is passed in chat mode: OpenSIR none, SQLM only </problem>;
  a completion ends at the token limit or at an end-of-turn token;
- the run commits its steps, and invalid outputs are recorded with their reasons;
- OpenSIR (one forced training group, tiny_run.force_training) trains, hot-swaps its adapter,
  and `minisir export` writes a quantized chat GGUF with its template and an Ollama Modelfile.
Random text never holds a well-formed problem, so every second teacher/proposer output that
fails to parse is taken as a fixed problem instead (the rest stay invalid, with their reason):
that way the students/solvers are sampled, through the chat template, too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import minisir.loop
from minisir.archive import Archive
from minisir.cli import main
from minisir.export import write_model_gguf
from minisir.methods import opensir, opensir_prompts, sqlm, sqlm_prompts
from minisir.sampler import Sampler
from tiny_models import CHATML, TINY_MERGES, TINY_SPECIALS, tiny_model, tiny_tokenizer_gguf
from tiny_run import check_committed, force_training

torch.set_num_threads(1)  # the machine's 2 cores are shared

MAX_TOKENS = 32
IM_START = 256 + len(TINY_MERGES) + TINY_SPECIALS.index("<|im_start|>")  # ids in the tiny vocabulary
IM_END = 256 + len(TINY_MERGES) + TINY_SPECIALS.index("<|im_end|>")
COMPLETION_STOPS = set(opensir_prompts.TEACHER_STOP) | set(opensir_prompts.STUDENT_STOP) | set(sqlm_prompts.PROPOSER_STOP_MATH) \
    | set(sqlm_prompts.SOLVER_STOP_MATH)


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chat-model")
    tok, n_vocab = tiny_tokenizer_gguf(root / "tok.gguf", chat_template=CHATML)
    model = tiny_model("qwen3", vocab=n_vocab)  # untied output head: its <|im_end|> row can be set alone
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        hidden = model.model(torch.randint(0, 256, (8, 64), generator=g)).last_hidden_state.flatten(0, 1)
        top = model.lm_head(hidden).max(-1).values.mean()
        direction = hidden.mean(0) / hidden.mean(0).norm()
        # mean <|im_end|> logit one nat below the mean top logit: a few percent per token
        model.lm_head.weight[n_vocab - 1] = direction * (top - 1.0) / (hidden @ direction).mean()
    return write_model_gguf(model, root / "tiny-chat.gguf", tok)


class RecordingSampler(Sampler):
    """The real sampler, remembering each generate call: prompts, stop strings, completions."""

    calls: list[dict] = []

    def generate(self, prompts, n=1, max_tokens=256, temperature=1.0, top_p=1.0, seed=0, stop=(), progress=None,
                 **kwargs):
        out = super().generate(prompts, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                               seed=seed, stop=stop, progress=progress, **kwargs)
        RecordingSampler.calls.append({"prompts": list(prompts), "stop": list(stop), "max_tokens": max_tokens,
                                       "completions": [c for group in out for c in group],
                                       "ids": [self.tokenize(p) for p in prompts],
                                       "eog": {t for t in range(self.n_vocab) if self.is_eog(t)}})
        return out


def _recipe(path: Path, run_dir: Path, gguf: Path, method: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "model": {"gguf": str(gguf), "prompt_style": "chat"},
        "sampler": {"n_ctx": 2048, "n_parallel": 8, "n_threads": 1},
        "method": method,
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 4096},
        "run": {"steps": 2, "seed": 0, "dir": str(run_dir)},
    }))
    return path


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    monkeypatch.setenv("MINISIR_CACHE", str(tmp_path / "cache"))  # the tiny model's converted checkpoint
    monkeypatch.setattr(minisir.loop, "Sampler", RecordingSampler)
    RecordingSampler.calls = []
    return RecordingSampler.calls


def _force_some_valid(monkeypatch, module, name: str, make) -> None:
    """Every second output that fails to parse becomes a valid, numbered problem."""
    real = getattr(module, name)
    seen = {"invalid": 0}

    def parse(text, *args, **kwargs):
        out = real(text, *args, **kwargs)
        if not out.valid:
            seen["invalid"] += 1
            if seen["invalid"] % 2:
                return make(seen["invalid"])
        return out

    monkeypatch.setattr(module, name, parse)


def _check_chat_plumbing(calls: list[dict], allowed_stops: set[tuple[str, ...]]) -> None:
    assert calls, "the run sampled nothing"
    eog_stops = 0
    for call in calls:
        assert tuple(call["stop"]) in allowed_stops, f"stop strings {call['stop']} in chat mode"
        assert not set(call["stop"]) & (COMPLETION_STOPS - {"</problem>"})
        for prompt, ids in zip(call["prompts"], call["ids"]):
            assert prompt.startswith("<|im_start|>user\n"), prompt[:80]
            assert "<|im_end|>\n<|im_start|>assistant\n" in prompt  # the template's generation prompt
            assert ids.count(IM_START) == prompt.count("<|im_start|>") == 2  # one user turn, parsed as special tokens
        for c in call["completions"]:
            if c.finish_reason == "length":
                assert len(c.token_ids) == call["max_tokens"]
                continue
            ended_turn = bool(c.token_ids) and c.token_ids[-1] in call["eog"]
            assert ended_turn or call["stop"], f"stopped by neither end of turn nor a stop string: {c}"
            eog_stops += ended_turn
    n = sum(len(c["completions"]) for c in calls)
    print(f"{len(calls)} generate calls, {n} completions, {eog_stops} ended their turn, stops {[c['stop'] for c in calls]}")
    assert eog_stops, "no completion ended its turn (the tiny model ends turns at a few percent per token)"
    assert all(call["eog"] == {IM_END, IM_START - 1} for call in calls)  # <|im_end|>, <|endoftext|>


def _check_invalid_recorded(run_dir: Path) -> None:
    with Archive.open(run_dir, readonly=True) as arc:
        problems = [p for p in arc.problems(limit=1000) if p["role"] != "seed"]
    assert any(not p["valid"] for p in problems)  # every second unparseable output stays invalid
    for p in problems:
        if not p["valid"]:
            assert p["invalid_reason"], "invalid output is recorded with its reason"


def test_opensir_chat_run_trains_and_exports(chat_gguf, recorded, tmp_path, monkeypatch):
    force_training(monkeypatch)  # random text never makes a trainable group by itself
    _force_some_valid(monkeypatch, opensir, "parse_teacher", lambda k: opensir_prompts.TeacherOutput(
        f"Tom has {k} apples and buys {k + 2} more. How many apples does he have now?", ["addition"], True))
    run_dir = tmp_path / "run"
    method = {"name": "opensir", "references_per_step": 1, "teacher_samples": 4, "student_samples": 2,
              "teacher_max_tokens": MAX_TOKENS, "student_max_tokens": MAX_TOKENS, "length_cap": MAX_TOKENS,
              "initial_pool": 0}
    result = CliRunner().invoke(main, ["run", str(_recipe(tmp_path / "r.yaml", run_dir, chat_gguf, method))])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "2 step(s) committed" in result.output
    _check_chat_plumbing(recorded, {()})  # teacher_stop(chat=True) == student_stop(chat=True) == []
    students = [p for c in recorded for p in c["prompts"] if "Tom has" in p]
    assert students and all("\\boxed" in p for p in students)  # the student prompt, in the template
    assert opensir_prompts.teacher_stop(True) == opensir_prompts.student_stop(True) == []
    info = check_committed(run_dir, 2)
    assert [step for step, _, _ in info["adapters"]] == [0, 1]  # trained and hot-swapped every step
    _check_invalid_recorded(run_dir)

    out = tmp_path / "export" / "chat-q8_0.gguf"
    result = CliRunner().invoke(main, ["export", str(run_dir), str(out), "--qtype", "q8_0"])
    assert result.exit_code == 0, (result.output, result.exception)
    with Sampler(out, n_ctx=256, n_parallel=1) as s:
        assert s.chat_template == CHATML and s.meta("general.file_type") == "7"  # q8_0
        assert s.meta("general.architecture") == "qwen3"
    modelfile = (out.parent / "Modelfile").read_text()
    assert "<|im_start|>assistant" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_sqlm_chat_run(chat_gguf, recorded, tmp_path, monkeypatch):
    _force_some_valid(monkeypatch, sqlm, "parse_proposal", lambda k: sqlm.Proposal(
        f"A shop sells {k} pens a day. How many pens does it sell in {k + 3} days?", valid=True))
    run_dir = tmp_path / "run"
    method = {"name": "sqlm", "topic": "arithmetic", "proposals_per_step": 4, "proposals_per_prompt": 4,
              "solver_samples": 3, "proposer_update_every": 1, "proposer_max_tokens": MAX_TOKENS,
              "solver_max_tokens": MAX_TOKENS}
    result = CliRunner().invoke(main, ["run", str(_recipe(tmp_path / "r.yaml", run_dir, chat_gguf, method))])
    assert result.exit_code == 0, (result.output, result.exception)
    proposer, solver = tuple(sqlm.proposer_stop("arithmetic", chat=True)), tuple(sqlm.solver_stop("arithmetic", chat=True))
    assert (proposer, solver) == (("</problem>",), ())
    _check_chat_plumbing(recorded, {proposer, solver})
    proposals = [c for c in recorded if c["stop"] == list(proposer)]
    assert proposals and all(p.endswith("<|im_start|>assistant\n<problem>\n") for c in proposals for p in c["prompts"])
    solvers = [p for c in recorded if c["stop"] == list(solver) for p in c["prompts"]]
    assert solvers and all("A shop sells" in p and "\\boxed" in p for p in solvers)
    check_committed(run_dir, 2)
    _check_invalid_recorded(run_dir)
