"""llama.cpp's converter as minisir finds, installs and runs it (minisir.convert), without network:
a source package is built here from a few stand-in files; the real converter (installed by
setup.sh) runs in test_export.py and test_architectures.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from minisir import convert
from minisir.errors import MinisirError

FILES = {
    "convert_hf_to_gguf.py": "# converter\n",
    "conversion/__init__.py": "# models\n",
    "conversion/llama.py": "# llama\n",
    "gguf-py/gguf/__init__.py": "# gguf\n",
    "LICENSE": "MIT\n",
    "src/llama.cpp": "// not needed\n",  # the C++ sources stay behind
    "gguf-py/gguf/__pycache__/x.pyc": "",
}


def _sdist(path: Path, files: dict[str, str], top: str | None = None) -> Path:
    top = top or f"llama_cpp_python-{convert.llama_cpp_version()}"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/vendor/llama.cpp/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_install_copies_only_the_converter_and_is_idempotent(tmp_path):
    sdist = _sdist(tmp_path / f"llama_cpp_python-{convert.llama_cpp_version()}.tar.gz",
                   {**FILES, "conversion/../../evil.py": "x"})
    dest = tmp_path / "conv"
    assert convert.install(sdist, dest) == dest
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["LICENSE", "conversion/__init__.py", "conversion/llama.py", "convert_hf_to_gguf.py",
                   "gguf-py/gguf/__init__.py"]
    assert not (tmp_path / "evil.py").exists() and not list(tmp_path.glob(".minisir-convert-*"))
    (dest / "LICENSE").write_text("kept")
    assert convert.install(sdist, dest) == dest and (dest / "LICENSE").read_text() == "kept"  # already there


def test_install_refuses_another_version_or_a_package_without_the_converter(tmp_path):
    other = _sdist(tmp_path / "llama_cpp_python-0.0.1.tar.gz", FILES, top="llama_cpp_python-0.0.1")
    with pytest.raises(MinisirError, match="must match the installed llama.cpp"):
        convert.install(other, tmp_path / "a")
    (tmp_path / "x").mkdir()
    empty = _sdist(tmp_path / "x" / f"llama_cpp_python-{convert.llama_cpp_version()}.tar.gz", {"README": "x"})
    with pytest.raises(MinisirError, match="holds no vendor/llama.cpp/convert_hf_to_gguf.py"):
        convert.install(empty, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_converter_is_one_line_and_export_writes_nothing(tmp_path, monkeypatch):
    from minisir.export import write_model_gguf
    from tiny_models import tiny_model, tiny_tokenizer_gguf

    monkeypatch.delenv("MINISIR_LLAMA_CONVERTER", raising=False)
    monkeypatch.setattr(convert, "_venv_dir", lambda: tmp_path / "venv-share")
    monkeypatch.setattr(convert, "_cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(MinisirError, match=r"not installed; run `python -m minisir.convert install`") as exc:
        convert.find_converter()
    assert "\n" not in str(exc.value)
    tok, n_vocab = tiny_tokenizer_gguf(tmp_path / "tok.gguf")
    out = tmp_path / "out"
    with pytest.raises(MinisirError, match="converter"):
        write_model_gguf(tiny_model("qwen2", vocab=n_vocab), out / "m.gguf", tok)
    assert list(out.iterdir()) == []  # no temporary checkpoint or half-written file left


def test_a_converter_failure_is_one_line(tmp_path):
    from tiny_models import tiny_tokenizer_gguf

    convert.find_converter()  # setup.sh installed the real one
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["NopeForCausalLM"], "model_type": "nope"}))
    tok, _ = tiny_tokenizer_gguf(tmp_path / "tok.gguf")
    with pytest.raises(MinisirError, match="converter failed on hf: .*NopeForCausalLM") as exc:
        convert.run_converter(hf, tmp_path / "m.gguf", "f32", tok)
    assert "\n" not in str(exc.value)
