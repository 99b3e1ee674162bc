"""An Ollama Modelfile beside an exported GGUF, so `ollama create NAME -f Modelfile` just works.

Ollama prompts through a Go template, not the GGUF's Jinja chat template. The chat formats
minisir's recipes use (Gemma turns, Llama 3 headers, ChatML for Qwen) are written as their Go
equivalents; a base model (no chat template) gets a plain completion template; any other chat
template is left to Ollama, which reads it from the GGUF and matches it to its own. Stop lines
name the model's end-of-turn and end-of-text tokens, read from the GGUF's vocabulary.
"""

from __future__ import annotations

import re
from pathlib import Path

from .atomic import atomic_file
from .errors import ModelNotFound
from .export import ExportError
from .gguf_info import read_gguf_info

MODELFILE = "Modelfile"

# Go templates (Ollama: .System holds the system messages, .Messages every message, in order).
# Gemma has no system turn: its Jinja template puts the system text at the top of the first user turn.
_GEMMA = """{{- $system := .System }}
{{- range .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ if $system }}{{ $system }}

{{ end }}{{ .Content }}<end_of_turn>
{{ $system = "" }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
"""
_LLAMA3 = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}
{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""
_CHATML = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""
_COMPLETION = "{{ .Prompt }}"

# (family, marker in the Jinja chat template, Go template, its end-of-turn tokens)
_FAMILIES = (
    ("gemma", "<start_of_turn>", _GEMMA, ("<end_of_turn>",)),
    ("llama3", "<|start_header_id|>", _LLAMA3, ("<|eot_id|>", "<|eom_id|>")),
    ("chatml", "<|im_start|>", _CHATML, ("<|im_end|>",)),
)
# ChatML templates (Qwen) may open with a default system turn when the user gives none.
_CHATML_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system\\n([^'\"{}<\\]+)<\|im_end\|>")

# Tokenizer arrays a Modelfile does not need (the vocabulary itself is read: stops name tokens).
_UNUSED_KEYS = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
_END_KEYS = ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id", "tokenizer.ggml.eos_token_id")


def _read_metadata(gguf: Path) -> tuple[str | None, list[str], list[int]]:
    """(chat template, vocabulary, ids of the eos/eot/eom tokens) from a GGUF's tokenizer.* keys."""
    try:
        kv = read_gguf_info(gguf, skip=_UNUSED_KEYS).kv
    except ModelNotFound as exc:
        raise ExportError(f"export: {exc}") from None
    template = kv.get("tokenizer.chat_template")
    tokens = kv.get("tokenizer.ggml.tokens", [])
    if not all(isinstance(tok, str) for tok in tokens):
        raise ExportError(f"export: {gguf} has a tokenizer.ggml.tokens array that is not strings")
    ends = [kv[key] for key in _END_KEYS if type(kv.get(key)) is int]
    return (template if isinstance(template, str) else None), tokens, ends


def modelfile_text(gguf: Path) -> str:
    """The Modelfile for `gguf` (FROM is the file's name, relative to the Modelfile beside it)."""
    template, tokens, ends = _read_metadata(gguf)
    vocab = set(tokens)
    lines = [f"# Ollama Modelfile written by minisir export. Use: ollama create NAME -f {MODELFILE}",
             f"FROM ./{gguf.name}"]
    stops: list[str] = []
    family = next((f for f in _FAMILIES if template and f[1] in template), None)
    if family is not None:
        name, _, go_template, turn_ends = family
        lines.append(f"# chat format: {name} (the GGUF's chat template as an Ollama Go template)")
        lines.append(f'TEMPLATE """{go_template}"""')
        if name == "chatml" and (m := _CHATML_DEFAULT_SYSTEM.search(template)):
            lines.append(f'SYSTEM """{m[1]}"""')
        stops += [t for t in turn_ends if t in vocab]
    elif template:
        lines.append("# chat format: not one minisir writes as a Go template; Ollama reads the GGUF's own")
    else:
        lines.append("# base model (no chat template): prompts are completed as written")
        lines.append(f'TEMPLATE """{_COMPLETION}"""')
    stops += [tokens[i] for i in ends if 0 <= i < len(tokens)]
    for stop in dict.fromkeys(stops):  # in order, once each
        if stop.strip() and '"' not in stop and "\n" not in stop:
            lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: Path) -> Path:
    """Write `Modelfile` beside `gguf` (replacing one there) and return its path."""
    gguf = Path(gguf)
    path = gguf.parent / MODELFILE
    text = modelfile_text(gguf)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
