"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hugging Face Hub: set before anything imports huggingface_hub (it reads the
# variable once, at import), so a model named hf://... is only ever looked up in a local cache.
os.environ["HF_HUB_OFFLINE"] = "1"

import minisir.loop


@pytest.fixture
def no_model_loading(monkeypatch):
    """Tripwire: input that must be refused never reaches the sampler (the first heavy load)."""

    def tripwire(*args, **kwargs):
        raise AssertionError("the model was loaded although the input should have been refused")

    monkeypatch.setattr(minisir.loop, "Sampler", tripwire)
