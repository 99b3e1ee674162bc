"""Turn chat messages into the exact prompt text a chat model expects.

Base models (the bundled one) get few-shot completion prompts from the methods; chat
models get their own chat template, read from the GGUF and rendered with jinja2.
"""

from __future__ import annotations

from typing import Callable

ChatFn = Callable[[list[dict]], str]
"""Renders chat messages to prompt text (the model's chat template, generation prompt included)."""


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) collapsed to single spaces: how problems appear in prompts."""
    return " ".join(str(text).split())


def chat_renderer(template: str | None, bos: str = "", eos: str = "") -> ChatFn:
    """A function rendering messages with `template`, ending at the assistant's turn.

    BOS is rendered as "" because the sampler adds it when tokenising.
    """
    if not template:
        raise ValueError("no chat template")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    compiled = env.from_string(template)

    def render(messages: list[dict]) -> str:
        return compiled.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
            raise_exception=raise_exception,
        )

    return render


def choose_style(style: str, template: str | None) -> ChatFn | None:
    """None for completion-style prompting, else a chat renderer ("auto" decides by the GGUF)."""
    if style == "completion" or (style == "auto" and not template):
        return None
    if not template:
        from .errors import RecipeError

        raise RecipeError(
            "model.prompt_style: chat was asked for but the GGUF has no chat template; "
            "use prompt_style: completion"
        )
    return chat_renderer(template)
