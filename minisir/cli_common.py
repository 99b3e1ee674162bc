"""What every `minisir` command shares: user mistakes as one line (exit 2), and --set overrides."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from .errors import MinisirError


def friendly(fn: Callable) -> Callable:
    """Turn MinisirError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MinisirError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """--set a.b=value pairs; values parsed as YAML scalars (numbers, bools, null)."""
    import yaml

    out = {}
    for item in values:
        if "=" not in item:
            raise MinisirError(f"--set {item}: expected KEY=VALUE, e.g. --set run.steps=3")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out
