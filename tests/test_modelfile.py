"""`minisir export` writes an Ollama Modelfile beside the GGUF: FROM the file, a Go template for
the model's chat format (or a completion template for a base model), stop lines for its
end-of-turn tokens.

The chat-format cases read tensorless GGUFs written here with the gguf package (the Modelfile
needs only tokenizer metadata); the end-to-end case exports a tiny random model through the real
CLI with the bundled (base, no chat template) tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import minisir.trainer
from minisir.archive import Archive
from minisir.assets import bundled_model_path
from minisir.cli import main
from minisir.ollama import modelfile_text, write_modelfile
from tiny_models import tiny_model

torch.set_num_threads(1)  # the machine's 2 cores are shared

GEMMA_JINJA = ("{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + "
               "message['content'] + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<start_of_turn>model\\n' }}{% endif %}")
LLAMA3_JINJA = ("{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
                "+ message['content'] + '<|eot_id|>' }}{% endfor %}")
QWEN_JINJA = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
              "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
              "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{% for message in messages %}"
              "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}")


def tokenizer_gguf(path: Path, tokens: list[str], eos: int, eot: int | None = None,
                   template: str | None = None) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_eos_token_id(eos)
    if eot is not None:
        w.add_eot_token_id(eot)
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def parse(text: str) -> dict:
    """FROM, TEMPLATE, SYSTEM and the stop list of a Modelfile (the subset minisir writes)."""
    out: dict = {"stop": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)}
    out["from"] = re.findall(r"^FROM (.*)$", text, re.M)
    for key in ("TEMPLATE", "SYSTEM"):
        m = re.search(rf'^{key} """(.*?)"""$', text, re.M | re.S)
        out[key.lower()] = m[1] if m else None
    return out


def balanced(go_template: str) -> bool:
    """Every if/range of a Go template is closed by an end, in order."""
    depth = 0
    for action in re.findall(r"\{\{-?\s*(\w+)", go_template):
        depth += action in ("if", "range", "with")
        depth -= action == "end"
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize("family, tokens, eos, eot, template, turn, stops, system", [
    ("gemma", ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "a"], 1, 4, GEMMA_JINJA,
     "<start_of_turn>model\n", ["<end_of_turn>", "<eos>"], None),
    ("llama3", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|eom_id|>"], 4, None, LLAMA3_JINJA, "<|start_header_id|>assistant<|end_header_id|>\n\n",
     ["<|eot_id|>", "<|eom_id|>"], None),
    ("chatml", ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"], 2, None, QWEN_JINJA, "<|im_start|>assistant\n",
     ["<|im_end|>"], "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
])
def test_chat_models_get_their_go_template_and_end_of_turn_stops(tmp_path, family, tokens, eos, eot, template,
                                                                 turn, stops, system):
    gguf = tokenizer_gguf(tmp_path / f"{family}.gguf", tokens, eos, eot, template)
    mf = parse(modelfile_text(gguf))
    assert mf["from"] == [f"./{family}.gguf"]
    assert mf["template"] is not None and balanced(mf["template"])
    assert mf["template"].endswith(turn)  # the prompt ends where the model's own turn begins
    assert "{{ .Content }}" in mf["template"] and "range .Messages" in mf["template"]
    assert mf["stop"] == stops
    assert mf["system"] == system


def test_unknown_chat_format_is_left_to_ollama(tmp_path):
    gguf = tokenizer_gguf(tmp_path / "m.gguf", ["</s>", "[INST]", "a"], 0,
                          template="{% for m in messages %}[INST] {{ m['content'] }}{% endfor %}")
    mf = parse(modelfile_text(gguf))
    assert mf["from"] == ["./m.gguf"] and mf["template"] is None  # Ollama matches the GGUF's own template
    assert mf["stop"] == ["</s>"]


def test_base_model_gets_a_completion_template(tmp_path):
    gguf = tokenizer_gguf(tmp_path / "base.gguf", ["<pad>", "<eos>", "a"], 1)
    mf = parse(modelfile_text(gguf))
    assert mf["template"] == "{{ .Prompt }}" and mf["stop"] == ["<eos>"]


# ---------------------------------------------------------------- through `minisir export`


class _FakeTrainer:
    """Stands in for GRPOTrainer: a tiny random Gemma 3 with a LoRA as the 'trained' model."""

    def __init__(self, cfg, gguf, hf_dir, **kwargs):
        from peft import LoraConfig, get_peft_model

        self.model = get_peft_model(tiny_model("gemma3", seed=3), LoraConfig(r=2, target_modules=["q_proj"]))

    def load_state(self, state):
        assert state.name == "step-000000"


def test_export_cli_writes_the_gguf_and_its_modelfile(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / "state" / "step-000000").mkdir(parents=True)
    with Archive.open(run_dir) as arc:
        arc.ensure_run({"model": {"gguf": str(bundled_model_path())}, "trainer": {}}, {}, 0)
        arc.commit_step({"step": 0}, [], [])
    monkeypatch.setattr(minisir.trainer, "GRPOTrainer", _FakeTrainer)
    out = tmp_path / "export" / "tuned.gguf"
    result = CliRunner().invoke(main, ["export", str(run_dir), str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in out.parent.iterdir()) == ["Modelfile", "tuned.gguf"]
    text = (out.parent / "Modelfile").read_text()
    mf = parse(text)
    assert mf["from"] == ["./tuned.gguf"] and (out.parent / mf["from"][0]).resolve() == out.resolve()
    assert mf["template"] == "{{ .Prompt }}"  # the bundled Gemma 3 270M is a base model
    assert mf["stop"] == ["<eos>"]
    assert f"ollama create NAME -f {out.parent / 'Modelfile'}" in result.output
    assert write_modelfile(out).read_text() == text  # rewriting gives the same file
