"""llama.cpp's own HF -> GGUF converter, from the source package of the installed llama-cpp-python.

Why: llama.cpp's `convert_hf_to_gguf.py` knows every architecture's conventions (norm offsets,
rotary layouts, biases, rope factors, hyperparameter keys) exactly as the llama.cpp that loads
the file expects them, so minisir writes no per-architecture tensor code of its own. The
converter is not on PyPI; the llama-cpp-python source package carries it (with its own newer
`gguf` package) under vendor/llama.cpp/. `install` copies those files out, once:

    python -m minisir.convert install [llama_cpp_python-VERSION.tar.gz]

(setup.sh does this; without a file it downloads the source package with pip). Conversions run
in a subprocess (minisir._convert_driver) so the converter's `gguf` never meets the installed one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from .atomic import atomic_dir
from .errors import MinisirError

SCRIPT = "convert_hf_to_gguf.py"
# What the converter needs from vendor/llama.cpp/ (plus llama.cpp's licence).
_MEMBERS = (SCRIPT, "conversion/", "gguf-py/gguf/", "LICENSE")


class ConverterError(MinisirError):
    """llama.cpp's converter is missing or failed."""


def llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise ConverterError("export: llama-cpp-python is not installed; run ./setup.sh") from None


def _dir_name() -> str:
    return f"llama.cpp-{llama_cpp_version()}"


def _venv_dir() -> Path:
    return Path(sys.prefix) / "share" / "minisir" / _dir_name()


def _cache_dir() -> Path:
    from .assets import cache_dir

    return cache_dir() / _dir_name()


def candidate_dirs() -> list[Path]:
    """Where the converter is looked for, in order: $MINISIR_LLAMA_CONVERTER, the venv, minisir's cache."""
    env = os.environ.get("MINISIR_LLAMA_CONVERTER")
    return ([Path(env)] if env else []) + [_venv_dir(), _cache_dir()]


def _complete(directory: Path) -> bool:
    return (directory / SCRIPT).is_file() and (directory / "conversion" / "__init__.py").is_file() \
        and (directory / "gguf-py" / "gguf" / "__init__.py").is_file()


def find_converter() -> Path:
    """The directory holding convert_hf_to_gguf.py, conversion/ and gguf-py/ for this llama.cpp."""
    for directory in candidate_dirs():
        if _complete(directory):
            return directory
    raise ConverterError(
        f"export: llama.cpp's converter for llama-cpp-python {llama_cpp_version()} is not installed; "
        "run `python -m minisir.convert install` (it fetches the source package with pip) or ./setup.sh"
    )


def _download_sdist(dest: Path) -> Path:
    version = llama_cpp_version()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
           f"llama-cpp-python=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConverterError(f"convert: pip could not download llama-cpp-python {version}'s source package "
                             f"({tail[0]}); download it elsewhere and pass its path to `install`")
    return found[0]


def _default_dest() -> Path:
    """The venv when it is writable (the converter belongs to its llama-cpp-python), else the cache."""
    probe = next(p for p in (_venv_dir().parent, _venv_dir().parent.parent, Path(sys.prefix)) if p.exists())
    return _venv_dir() if os.access(probe, os.W_OK) else _cache_dir()


def install(sdist: Path | None = None, dest: Path | None = None) -> Path:
    """Copy the converter out of llama-cpp-python's source package into `dest` (atomically)."""
    dest = Path(dest) if dest else _default_dest()
    if _complete(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix=".minisir-convert-", dir=_mkdir(dest.parent)) as tmp:
        tmp = Path(tmp)
        sdist = Path(sdist) if sdist else _download_sdist(tmp)
        if not sdist.is_file():
            raise ConverterError(f"convert: {sdist} does not exist; pass llama-cpp-python's source package (.tar.gz)")
        want = f"llama_cpp_python-{llama_cpp_version()}"
        if not sdist.name.startswith(want + "."):
            raise ConverterError(f"convert: {sdist.name} is not {want}'s source package; the converter must "
                                 "match the installed llama.cpp")
        with atomic_dir(dest) as out:
            try:
                with tarfile.open(sdist, "r:gz") as tar:
                    for member in tar.getmembers():
                        rel = member.name.partition("/vendor/llama.cpp/")[2]
                        parts = Path(rel).parts
                        if (not rel.startswith(_MEMBERS) or not member.isfile() or ".." in parts
                                or "__pycache__" in parts):
                            continue
                        target = out / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with tar.extractfile(member) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            except (tarfile.TarError, OSError) as exc:
                raise ConverterError(f"convert: cannot read {sdist} ({exc})") from None
            if not _complete(out):
                raise ConverterError(f"convert: {sdist.name} holds no vendor/llama.cpp/{SCRIPT}")
    return dest


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConverterError(f"convert: cannot create {path} ({exc.strerror or exc}); pass --dest") from None
    return path


def run_converter(hf_dir: Path, out: Path, outtype: str, tokenizer_gguf: Path,
                  writer_calls: list[tuple[str, list]] | None = None, name: str | None = None) -> None:
    """Convert an HF checkpoint directory to `out`, with the tokenizer metadata of `tokenizer_gguf`.

    `writer_calls` are extra GGUFWriter calls (name, args) made after the converter's own
    hyperparameters, for what it leaves to llama.cpp's defaults (e.g. a sliding-window pattern).
    """
    job = {"converter": str(find_converter()), "hf_dir": str(hf_dir), "out": str(out), "outtype": outtype,
           "tokenizer_gguf": str(Path(tokenizer_gguf).resolve()), "writer_calls": writer_calls or [],
           "name": name}
    proc = subprocess.run([sys.executable, "-m", "minisir._convert_driver"], input=json.dumps(job),
                          capture_output=True, text=True)
    if proc.returncode != 0 or not Path(out).is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
        raise ConverterError(f"export: llama.cpp's converter failed on {hf_dir.name}: "
                             f"{lines[-1] if lines else f'exit code {proc.returncode}'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minisir.convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="copy the converter out of llama-cpp-python's source package")
    p.add_argument("sdist", nargs="?", type=Path, help="llama_cpp_python-VERSION.tar.gz (default: pip download)")
    p.add_argument("--dest", type=Path, default=None,
                   help="target directory (default: the venv's share/minisir/; elsewhere, set MINISIR_LLAMA_CONVERTER)")
    sub.add_parser("where", help="print the converter's directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(install(args.sdist, args.dest))
        else:
            print(find_converter())
    except MinisirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
