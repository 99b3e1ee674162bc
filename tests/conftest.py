"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hugging Face Hub: set before anything imports huggingface_hub (it reads the
# variable once, at import), so a model named hf://... is only ever looked up in a local cache.
os.environ["HF_HUB_OFFLINE"] = "1"
# The CLI reuses identical evaluations from ~/.cache/minisir/evals; tests (some with a fake
# sampler) must neither read nor fill the user's cache. test_eval_cache sets its own.
os.environ["MINISIR_EVAL_CACHE"] = "off"

from hypothesis import settings

import minisir.loop

# Property tests: CI and the default run are derandomised with no deadline (a shared 2-core machine
# must not fail on time, and the same commit gives the same verdict). The random search is its
# own opt-in target: MINISIR_HYPOTHESIS=explore pytest tests/test_parsers_property.py
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("MINISIR_HYPOTHESIS") == "explore" else "ci")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Tripwire: input that must be refused never reaches the sampler (the first heavy load)."""

    def tripwire(*args, **kwargs):
        raise AssertionError("the model was loaded although the input should have been refused")

    monkeypatch.setattr(minisir.loop, "Sampler", tripwire)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip where torch sees no GPU (torch is imported only if some are collected)."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in cuda_items:
            item.add_marker(skip)
