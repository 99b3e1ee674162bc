"""Models named on the Hugging Face Hub (hf://OWNER/REPO[@REVISION]/FILE), resolved by the real
huggingface_hub code against a local Hub cache built here, offline.

No network is reachable (and none is tried): HF_HUB_OFFLINE=1 is set for the whole test session
in conftest.py, again here in-process, and in the environment of every subprocess. The cache is
written in the layout huggingface_hub itself writes (models--OWNER--REPO/blobs, snapshots/<commit>,
refs/<name>) and checked with huggingface_hub's own cache scanner before it is used.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from minisir import assets
from minisir.cli import main
from minisir.errors import MinisirError, ModelNotFound
from minisir.recipe import load_recipe
from tiny_run import TINY

ROOT = Path(__file__).resolve().parent.parent
REPO = "minisir-test/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_gguf_bytes(tmp_path: Path) -> bytes:
    """A real (tensorless) GGUF file written by the gguf package."""
    import gguf

    path = tmp_path / "src.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<s>", "</s>", "a"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def add_to_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT,
                     refs: tuple[str, ...] = ("main",)) -> Path:
    """Put `files` into a Hub cache as huggingface_hub stores downloads: content-addressed blobs,
    a snapshot of relative symlinks per commit, and refs naming the commit. Returns the snapshot."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no trailing newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache that huggingface_hub (already imported) uses, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return env


# ---------------------------------------------------------------- resolution from the cache


def test_cache_layout_is_what_huggingface_hub_reads(hub, tmp_path):
    from huggingface_hub import scan_cache_dir

    add_to_hub_cache(hub, REPO, {FILE: tiny_gguf_bytes(tmp_path), "sub/other.gguf": b"GGUF..."}, refs=("main", "v1"))
    info = scan_cache_dir(hub)
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    (rev,) = repo.revisions
    assert rev.commit_hash == COMMIT and rev.refs == frozenset({"main", "v1"})
    assert sorted(f.file_name for f in rev.files) == ["other.gguf", FILE]


def test_gguf_resolves_offline_from_the_cache(hub, tmp_path):
    data = tiny_gguf_bytes(tmp_path)
    snapshot = add_to_hub_cache(hub, REPO, {FILE: data, "sub/nested.gguf": data}, refs=("main", "v1"))
    path = assets.resolve_gguf(f"hf://{REPO}/{FILE}")
    assert path == snapshot / FILE and path.read_bytes() == data
    # a tag, the commit itself and a file in a folder resolve the same way
    assert assets.resolve_gguf(f"hf://{REPO}@v1/{FILE}") == snapshot / FILE
    assert assets.resolve_gguf(f"hf://{REPO}@{COMMIT}/{FILE}") == snapshot / FILE
    assert assets.resolve_gguf(f"hf://{REPO}@v1/sub/nested.gguf") == snapshot / "sub" / "nested.gguf"


def test_hf_dir_resolves_offline_from_the_cache(hub):
    snapshot = add_to_hub_cache(hub, "minisir-test/tiny-hf", {"config.json": b"{}", "model.safetensors": b"x"})
    assert assets.resolve_hf_dir("hf://minisir-test/tiny-hf") == snapshot
    assert assets.resolve_hf_dir(f"hf://minisir-test/tiny-hf@{COMMIT}") == snapshot
    add_to_hub_cache(hub, "minisir-test/no-config", {"model.safetensors": b"x"})
    with pytest.raises(ModelNotFound, match="model.hf_dir: hf://minisir-test/no-config has no config.json"):
        assets.resolve_hf_dir("hf://minisir-test/no-config")


# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("spec, why", [
    (f"hf://{REPO}/{FILE}", "not in the Hugging Face cache"),                    # nothing cached
    (f"hf://{REPO}/missing.gguf", "not in the Hugging Face cache"),              # repo cached, file not
    (f"hf://{REPO}@v9/{FILE}", "not in the Hugging Face cache"),                 # unknown revision
])
def test_missing_gguf_is_one_line_saying_what_to_download(hub, tmp_path, spec, why):
    if "missing" in spec or "@v9" in spec:
        add_to_hub_cache(hub, REPO, {FILE: tiny_gguf_bytes(tmp_path)})
    with pytest.raises(ModelNotFound) as err:
        assets.resolve_gguf(spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"model.gguf: cannot get {spec}: ")
    assert why in msg and "HF_HUB_OFFLINE is set" in msg
    filename = spec.rsplit("/", 1)[1]
    revision = " --revision v9" if "@v9" in spec else ""
    assert f"`hf download {REPO} {filename}{revision}`" in msg
    assert f"it fills the cache {hub}" in msg  # where the download goes
    assert "set model.gguf to a local GGUF file" in msg


def test_missing_hf_dir_is_one_line(hub):
    with pytest.raises(ModelNotFound) as err:
        assets.resolve_hf_dir("hf://minisir-test/absent@v2")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.hf_dir: cannot get hf://minisir-test/absent@v2: ")
    assert "`hf download minisir-test/absent --revision v2`" in msg and "HF checkpoint directory" in msg


@pytest.mark.parametrize("spec, want_file, part", [
    ("hf://owner", True, "not a Hub reference"),
    ("hf://owner/repo", True, "names a repo but no file"),
    ("hf://owner/repo/x.gguf", False, "names a file"),
    ("hf://own er/repo/x.gguf", True, "not a Hub reference"),
])
def test_malformed_reference(spec, want_file, part):
    with pytest.raises(ValueError, match=part):
        assets.parse_hub_ref(spec, want_file)


def test_reference_grammar():
    ref = assets.parse_hub_ref("hf://o/r@refs/pr/3/dir/m.gguf", want_file=True)
    assert (ref.repo_id, ref.revision, ref.filename) == ("o/r", "refs/pr/3", "dir/m.gguf")
    assert str(ref) == "hf://o/r@refs/pr/3/dir/m.gguf"
    assert assets.parse_hub_ref("hf://o/r", want_file=False) == assets.HubRef("o/r")


# ---------------------------------------------------------------- through the real environment and CLI


def test_hf_home_and_offline_env_are_honoured_in_a_fresh_process(tmp_path):
    """A new interpreter reads HF_HOME / HF_HUB_OFFLINE itself (huggingface_hub reads them at import)."""
    snapshot = add_to_hub_cache(tmp_path / "hf" / "hub", REPO, {FILE: tiny_gguf_bytes(tmp_path)})
    code = f"from minisir.assets import resolve_gguf; print(resolve_gguf('hf://{REPO}/{FILE}'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_subprocess_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(snapshot / FILE)


def _recipe(tmp_path: Path, gguf: str) -> Path:
    recipe = copy.deepcopy(TINY)
    recipe["model"]["gguf"] = gguf
    recipe["run"]["dir"] = str(tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_with_an_uncached_reference_exits_2_with_one_line(tmp_path):
    recipe = _recipe(tmp_path, f"hf://{REPO}/{FILE}")
    load_recipe(recipe)  # validates: the file is only looked for when the run starts
    proc = subprocess.run([sys.executable, "-m", "minisir.cli", "run", str(recipe)], capture_output=True,
                          text=True, timeout=120, env=_subprocess_env(tmp_path), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: model.gguf: cannot get hf://{REPO}/{FILE}: "), lines
    assert f"hf download {REPO} {FILE}" in lines[0] and str(tmp_path / "hf" / "hub") in lines[0]
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_run_with_a_malformed_reference_is_a_recipe_error(tmp_path, hub, no_model_loading):
    result = CliRunner().invoke(main, ["run", str(_recipe(tmp_path, "hf://just-a-name"))])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "model.gguf: 'hf://just-a-name' is not a Hub reference" in lines[0], lines


def test_run_finds_a_cached_reference(tmp_path, hub, no_model_loading):
    """A cached reference resolves in the CLI's run path and the run goes on to load the model."""
    add_to_hub_cache(hub, REPO, {FILE: tiny_gguf_bytes(tmp_path)})
    result = CliRunner().invoke(main, ["run", str(_recipe(tmp_path, f"hf://{REPO}/{FILE}"))])
    assert isinstance(result.exception, AssertionError), result.output  # the no_model_loading tripwire
    assert "the model was loaded" in str(result.exception)


# ---------------------------------------------------------------- the shipped recipes


@pytest.mark.parametrize("name, repo, filename", [
    ("gemma2b.yaml", "bartowski/gemma-2-2b-it-GGUF", "gemma-2-2b-it-Q4_K_M.gguf"),
    ("llama3b.yaml", "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf"),
    ("qwen2.5-1.5b.yaml", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf"),
])
def test_shipped_recipes_name_hub_models_and_validate_uncached(hub, monkeypatch, name, repo, filename):
    monkeypatch.chdir(ROOT)  # run.dir is relative to the working directory
    cfg = load_recipe(ROOT / "recipes" / name)
    assert cfg.model.gguf == f"hf://{repo}/{filename}"
    assert cfg.model.prompt_style == "chat" and cfg.method.name == "opensir"
    with pytest.raises(MinisirError, match=f"hf download {repo} {filename}"):
        assets.resolve_gguf(cfg.model.gguf)
