"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

import minisir.loop


@pytest.fixture
def no_model_loading(monkeypatch):
    """Tripwire: input that must be refused never reaches the sampler (the first heavy load)."""

    def tripwire(*args, **kwargs):
        raise AssertionError("the model was loaded although the input should have been refused")

    monkeypatch.setattr(minisir.loop, "Sampler", tripwire)
