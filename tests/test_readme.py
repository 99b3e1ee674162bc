"""README cannot drift from the code: every recipe key and every CLI flag it names must exist.

Keys are read as `section.key` in backticks (`run.eval_every`, `method.labels: program`); flags
as `--flag` inside a backticked or fenced `minisir ...` command, checked against that command.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from minisir.cli import main
from minisir.methods import METHODS, method_config
from minisir.recipe import Recipe

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTIONS = ("model", "sampler", "method", "trainer", "run", "eval")
_KEY = re.compile(r"`(" + "|".join(SECTIONS) + r")\.([a-z_][a-z0-9_]*)")
_COMMAND = re.compile(r"(?:`|^\s*)(minisir\s[^`\n]*)", re.M)


def _fields(section: str) -> set[str]:
    if section == "method":
        return {name for tag in METHODS for name in method_config(tag).model_fields}
    return set(Recipe.model_fields[section].annotation.model_fields)


def readme_keys() -> list[tuple[str, str]]:
    return sorted(set(_KEY.findall(README)))


def readme_commands() -> list[str]:
    return sorted({m.strip() for m in _COMMAND.findall(README) if "--" in m})


def _resolve(words: list[str]) -> click.Command:
    """The deepest (sub)command the words name, e.g. ["archive", "export", ...] -> archive export."""
    command: click.Command = main
    for word in words:
        if isinstance(command, click.Group) and word in command.commands:
            command = command.commands[word]
        else:
            break
    return command


def test_readme_names_keys_and_commands():
    assert len(readme_keys()) > 10 and len(readme_commands()) > 5  # the patterns still read README


@pytest.mark.parametrize("section, key", readme_keys())
def test_every_recipe_key_readme_names_exists(section, key):
    assert key in _fields(section), f"README names {section}.{key}, which no recipe accepts"


def _variants(line: str) -> list[str]:
    """A table's `minisir bench sampler\\|train --json` stands for one command per alternative."""
    words = line.split()
    for i, word in enumerate(words):
        if "\\|" in word:
            return [v for alt in word.split("\\|") for v in _variants(" ".join(words[:i] + [alt] + words[i + 1:]))]
    return [line]


@pytest.mark.parametrize("line", readme_commands())
def test_every_flag_readme_gives_a_command_exists(line):
    for variant in _variants(line):
        words = variant.split()[1:]
        command = _resolve([w for w in words if not w.startswith("-")])
        known = {opt for param in command.params for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", variant):
            assert flag in known, f"README runs `{variant}`, but `minisir {command.name}` has no {flag}"


def test_eval_defaults_match_between_the_cli_and_recipes():
    from minisir.evaluate import EvalConfig

    params = {p.name: p.default for p in main.commands["eval"].params}
    defaults = EvalConfig()
    for name in ("k", "max_tokens", "temperature", "top_p", "seed"):
        assert params[name] == getattr(defaults, name), name


@pytest.mark.parametrize("block", re.findall(r"```yaml\n(.*?)```", README, re.S))
def test_every_recipe_snippet_in_readme_is_a_valid_recipe(block):
    import yaml

    from minisir.recipe import parse_recipe

    parse_recipe(yaml.safe_load(block), "README")  # raises, naming the key, on anything unknown


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    import yaml

    from minisir.recipe import parse_recipe

    parse_recipe(yaml.safe_load(path.read_text()), str(path))
