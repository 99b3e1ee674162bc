"""`minisir export --adapter-only`: the newest trained LoRA as a PEFT directory that PEFT loads
onto the base, tensor for tensor what the trainer saved, with a model card.

The run is a real two-step OpenSIR run of a tiny random Qwen3 GGUF (its text is random, so
one training group is forced, tiny_run.force_training); step 1 is made to train nothing so the
export must pick step 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from minisir.archive import Archive
from minisir.cli import main
from minisir.export import write_model_gguf
from tiny_models import CHATML, tiny_model, tiny_tokenizer_gguf
from tiny_run import force_training

torch.set_num_threads(1)  # the machine's 2 cores are shared


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapter-model")
    tok, n_vocab = tiny_tokenizer_gguf(root / "tok.gguf", chat_template=CHATML)
    return write_model_gguf(tiny_model("qwen3", seed=2, vocab=n_vocab), root / "tiny.gguf", tok)


@pytest.fixture
def trained_run(tiny_gguf, tmp_path, monkeypatch) -> Path:
    """A committed two-step run whose step 0 trained and step 1 did not."""
    from minisir.methods import opensir

    monkeypatch.setenv("MINISIR_CACHE", str(tmp_path / "cache"))  # the tiny model's converted checkpoint
    force_training(monkeypatch)
    trains = opensir.play

    def play(runner, step, phase, round_=0):
        result = trains(runner, step, phase, round_)
        if step == 1:
            result.samples = []
        return result

    monkeypatch.setattr(opensir, "play", play)
    run_dir = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"gguf": str(tiny_gguf), "prompt_style": "chat"},
        "sampler": {"n_ctx": 1024, "n_parallel": 4, "n_threads": 1},
        "method": {"name": "opensir", "references_per_step": 1, "teacher_samples": 2, "student_samples": 2,
                   "teacher_max_tokens": 16, "student_max_tokens": 16, "length_cap": 16, "initial_pool": 0},
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024, "learning_rate": 0.01},
        "run": {"steps": 2, "seed": 0, "dir": str(run_dir)},
    }))
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == ["step-000000"]
    return run_dir


def test_adapter_only_loads_with_peft(trained_run, tiny_gguf, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from minisir.hf_model import load_hf_model

    with Archive.open(trained_run) as arc:  # a held-out result, as `minisir eval` stores it
        arc.add_eval(0, "arithmetic-easy", {"n_questions": 40, "pass@1": 0.3125, "pass@1_ci": [0.2, 0.43],
                                            "maj@k": 0.35, "greedy": 0.275, "config": {"k": 4}})
    out = tmp_path / "lora"
    result = CliRunner().invoke(main, ["export", str(trained_run), "--adapter-only", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "step 1 trained nothing: exporting step 0" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lora")]  # no temp directory left

    saved = load_file(str(trained_run / "state" / "step-000000" / "adapter" / "adapter_model.safetensors"))
    model = PeftModel.from_pretrained(load_hf_model(tiny_gguf), str(out))
    loaded = {name.replace(".default", ""): p for name, p in model.named_parameters() if "lora_" in name}
    assert set(loaded) == set(saved) and len(saved) > 0
    for name, tensor in saved.items():
        assert torch.equal(loaded[name].detach().cpu(), tensor), name
    assert any(t.abs().max() > 0 for n, t in saved.items() if "lora_B" in n)  # trained: B left its zero init
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_gguf) and config["r"] == 4 and config["lora_alpha"] == 8

    card = (out / "README.md").read_text()
    for needed in (str(tiny_gguf), "opensir", "trained through step 0 of 2", "arithmetic-easy", "31.2", "27.5"):
        assert needed in card, needed

    again = CliRunner().invoke(main, ["export", str(trained_run), "--adapter-only", str(out)])  # replaces its own export
    assert again.exit_code == 0, again.output
    (out / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(main, ["export", str(trained_run), "--adapter-only", str(out)])
    assert refused.exit_code == 2 and "holds other files" in refused.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_adapter_only_before_training_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Archive.open(run_dir) as arc:
        arc.ensure_run({"model": {"gguf": "bundled"}, "method": {"name": "opensir"}}, {}, seed=0)
        arc.commit_step({"step": 0}, [], [])
    result = CliRunner().invoke(main, ["export", str(run_dir), "--adapter-only", str(tmp_path / "lora")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and "no trained step yet" in result.stderr
    assert not (tmp_path / "lora").exists()
