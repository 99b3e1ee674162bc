"""Lint the Dockerfile without a Docker engine: parse it and check what a build would need.

Stages and FROM references resolve for both flavours, the FLAVOR build-arg switches the
CUDA bases for plain Ubuntu, every COPY source exists and survives .dockerignore, every
repo script a RUN calls is copied in first, the install mirrors setup.sh (same versions),
ENTRYPOINT is minisir and /runs is a volume. No package-registry hosts in the files.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
INSTALL = ROOT / "scripts" / "docker-install.sh"
SMOKE = ROOT / "scripts" / "docker-smoke.sh"
KNOWN = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "ENTRYPOINT", "CMD", "VOLUME", "EXPOSE",
         "LABEL", "USER", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD"}


@dataclass
class Stage:
    base: str
    name: str | None
    args: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with comments dropped and backslash continuations joined."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def substitute(value: str, args: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in args, f"${name} is not a declared ARG"
        return args[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, value)


def parse(flavor: str | None = None) -> tuple[dict[str, str], list[Stage]]:
    ins = instructions(DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in ins:
        assert keyword in KNOWN, f"unknown instruction {keyword}"
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = substitute(default.strip('"'), global_args)
        elif keyword == "FROM":
            args = dict(global_args)
            if flavor is not None:
                args["FLAVOR"] = flavor
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            assert len(parts) in (1, 3), f"bad FROM {rest}"
            stages.append(Stage(substitute(parts[0], args), name, args))
        else:
            assert stages, f"{keyword} before the first FROM"
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                stages[-1].args[name] = default.strip('"') or stages[-1].args.get(name, "")
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, down to an external image."""
    names = {s.name: s for s in stages if s.name}
    out = [stage]
    while stage.base in names:
        stage = names[stage.base]
        out.append(stage)
    return out


def image(stages: list[Stage], stage: Stage) -> str:
    return chain(stages, stage)[-1].base


def dockerignored(rel: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    return any(fnmatch.fnmatch(rel, p) or rel.split("/")[0] == p for p in patterns)


def test_dockerfile_parses_and_stages_resolve():
    global_args, stages = parse()
    assert global_args.get("FLAVOR") == "cuda", "FLAVOR must default to cuda"
    names = [s.name for s in stages if s.name]
    assert len(names) == len(set(names)), f"duplicate stage names {names}"
    for i, stage in enumerate(stages):
        earlier = {s.name for s in stages[:i] if s.name}
        ref = stage.base
        if "/" in ref or ":" in ref:  # an external image: registry/name:tag
            assert re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+", ref), f"bad image reference {ref}"
        else:
            assert ref in earlier, f"FROM {ref}: no earlier stage of that name"
        for keyword, rest in stage.instructions:
            m = re.search(r"--from=(\S+)", rest)
            if keyword == "COPY" and m:
                assert m.group(1) in earlier, f"COPY --from={m.group(1)}: unknown stage"


@pytest.mark.parametrize("flavor", ["cuda", "cpu"])
def test_build_arg_switches_the_base(flavor):
    _, stages = parse(flavor)
    final = stages[-1]
    build = next(s for s in stages if s.name == "build")
    runtime_image, build_image = image(stages, final), image(stages, build)
    if flavor == "cuda":
        assert runtime_image.startswith("nvidia/cuda:") and "-runtime-" in runtime_image
        assert build_image.startswith("nvidia/cuda:") and "-devel-" in build_image
        env = " ".join(r for s in chain(stages, build) for k, r in s.instructions if k == "ENV")
        assert "-DGGML_CUDA=on" in env
    else:
        assert not runtime_image.startswith("nvidia/") and not build_image.startswith("nvidia/")
        env = " ".join(r for s in chain(stages, build) for k, r in s.instructions if k == "ENV")
        assert "GGML_CUDA" not in env
    # The CUDA and CPU images carry the same Ubuntu release (same Python).
    assert runtime_image.endswith(stages[0].args["UBUNTU_VERSION"])


def test_copy_sources_exist_and_are_not_ignored():
    _, stages = parse()
    copied = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            assert keyword != "ADD", "use COPY (ADD fetches URLs and unpacks archives)"
            if keyword != "COPY" or "--from=" in rest:
                continue
            *sources, _dest = [t for t in shlex.split(rest) if not t.startswith("--")]
            assert sources, rest
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                assert not dockerignored(src), f"COPY {src}: excluded by .dockerignore"
                copied.append(src)
    for needed in ("pyproject.toml", "README.md", "minisir", "recipes", "scripts"):
        assert needed in copied, f"{needed} is not copied into the image"
    for heavy in (".venv", "runs", ".git"):
        assert dockerignored(heavy), f".dockerignore must exclude {heavy}"


def test_run_steps_reference_copied_files():
    _, stages = parse()
    final = stages[-1]
    copied_dirs: set[str] = set()
    used = []
    for keyword, rest in final.instructions:
        if keyword == "COPY" and "--from=" not in rest:
            copied_dirs.update(Path(t).parts[0] for t in shlex.split(rest)[:-1])
        if keyword == "RUN":
            for token in re.findall(r"(?<![\w/$.-])((?:scripts|minisir|recipes|tests)/[\w./-]+)", rest):
                used.append(token)
                assert (ROOT / token).exists(), f"RUN uses {token}: not in the repository"
                assert token.split("/")[0] in copied_dirs, f"RUN uses {token} before it is copied"
                if token.endswith(".sh"):
                    assert (ROOT / token).stat().st_mode & 0o111, f"{token} is not executable"
    assert used, "no RUN step names a repository file: the checks above checked nothing"


def test_entrypoint_volume_and_workdir():
    _, stages = parse()
    final = stages[-1]
    kw = {}
    for keyword, rest in final.instructions:
        kw.setdefault(keyword, []).append(rest)
    assert json.loads(kw["ENTRYPOINT"][-1]) == ["minisir"]
    assert "/runs" in json.loads(kw["VOLUME"][-1])
    workdir = kw["WORKDIR"][-1]
    assert any(r.split()[-1].rstrip("/").endswith("recipes") for r in kw["COPY"]), "recipes/ not in the image"
    assert workdir == "/opt/minisir", "recipes/gemma2b.yaml must resolve relative to the WORKDIR"
    env = " ".join(kw["ENV"])
    assert "/opt/venv/bin" in env and "MINISIR_CACHE=/runs" in env


def _setup_value(name: str) -> str:
    m = re.search(rf"^{name}=(\S+)", (ROOT / "setup.sh").read_text(), re.M)
    assert m, f"setup.sh has no {name}="
    return m.group(1)


def test_install_mirrors_setup_sh():
    setup = (ROOT / "setup.sh").read_text()
    install = INSTALL.read_text()
    llama = _setup_value("LLAMA_VERSION")
    torch = re.search(r"TORCH_SPEC:-([^}\"]+)", setup).group(1)
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG LLAMA_VERSION={llama}" in dockerfile
    assert f"ARG TORCH_SPEC={torch}" in dockerfile
    assert f"LLAMA_VERSION={llama}" in install and f"TORCH_SPEC:-{torch}" in install
    # The same pip steps, in the same order: torch, then minisir with the wheel, then the eval data.
    def pip_lines(text: str) -> list[str]:
        return [re.sub(r"\s+", " ", ln.split("install", 1)[1]).strip()
                for ln in text.splitlines() if '"${PIP[@]}" install' in ln]
    assert pip_lines(install) == pip_lines(setup)
    assert "-DGGML_CUDA=on" in setup and "-DGGML_CUDA=on" in dockerfile


@pytest.mark.parametrize("path", [DOCKERFILE, INSTALL, SMOKE, ROOT / ".dockerignore"], ids=lambda p: p.name)
def test_no_registry_hosts(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: the image build needs it"
    text = path.read_text()
    assert not re.search(r"https?://", text), f"{path.name} names a URL"
    assert not re.search(r"--(extra-)?index-url|\bpypi\b|pythonhosted|download\.pytorch", text, re.I)
