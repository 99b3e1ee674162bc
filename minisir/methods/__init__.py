"""Self-play methods. Each is one module that owns its step and exposes:

- a pydantic config class (the recipe's `method:` section, tagged by `name`);
- `play(runner, step, phase, round_) -> StepResult`: one round of sampling, scoring and
  GRPO group building (methods.common has the shared pieces);
- `eval_prompt(question, chat)` and `eval_stop(chat)`: how held-out questions are asked,
  the same way the method's students are.

A third method is one new module plus one line in METHODS and one in recipe.Method.
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS = {"opensir": "minisir.methods.opensir", "sqlm": "minisir.methods.sqlm", "rlvr": "minisir.methods.rlvr"}


def method_module(name: str) -> ModuleType:
    """The module that implements method `name`."""
    try:
        return importlib.import_module(METHODS[name])
    except KeyError:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(METHODS)}") from None
