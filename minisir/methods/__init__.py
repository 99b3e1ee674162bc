"""Self-play methods. Each is one module that owns its step and exposes:

- a pydantic config class (the recipe's `method:` section, tagged by `name`);
- `play(runner, step, phase, round_) -> StepResult`: one round of sampling, scoring and
  GRPO group building (methods.common has the shared pieces);
- `eval_prompt(question, chat)` and `eval_stop(chat)`: how held-out questions are asked,
  the same way the method's students are.

METHODS is the one registry: the recipe's `method:` union and its tags, the loop and the
CLI all read it. A new method is one new module plus one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (module, its config class). The config's `name` field must default to the key.
METHODS: dict[str, tuple[str, str]] = {
    "opensir": ("minisir.methods.opensir", "OpenSIRConfig"),
    "sqlm": ("minisir.methods.sqlm", "SQLMConfig"),
    "rlvr": ("minisir.methods.rlvr", "RLVRConfig"),
}
DEFAULT_METHOD = "opensir"


def method_module(name: str) -> ModuleType:
    """The module that implements method `name`."""
    try:
        path, _ = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(METHODS)}") from None
    return importlib.import_module(path)


def method_config(name: str) -> type:
    """The pydantic config class (a recipe's `method:` section) of method `name`."""
    cls = getattr(method_module(name), METHODS[name][1])
    if cls.model_fields["name"].default != name:
        raise TypeError(f"{cls.__name__}.name defaults to {cls.model_fields['name'].default!r}, not {name!r}")
    return cls
