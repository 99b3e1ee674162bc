"""The one GGUF header reader: parsed metadata, raw tokenizer values, array lengths, and errors."""

from __future__ import annotations

import struct

import pytest

from minisir.assets import bundled_model_path
from minisir.errors import ModelNotFound
from minisir.gguf_info import read_gguf_info, read_raw_kv

GGUF_STRING = 8  # the GGUF spec's value type of a string


def test_raw_values_agree_with_parsed_metadata():
    path = bundled_model_path()
    info = read_gguf_info(path)
    raw = {key: (vtype, value) for key, vtype, value in read_raw_kv(path)}
    assert raw, "the bundled model has tokenizer.* keys"
    assert all(key.startswith("tokenizer.") for key in raw)
    vtype, value = raw["tokenizer.ggml.tokens"]
    etype, count = struct.unpack_from("<IQ", value, 0)
    assert etype == GGUF_STRING and count == info.lengths["tokenizer.ggml.tokens"] > 1000
    assert not any(key.startswith("tokenizer.") for key in info.kv)  # skipped, but counted
    everything = {key for key, _, _ in read_raw_kv(path, prefix="")}
    assert set(info.kv) <= everything and set(raw) <= everything


def test_missing_file_is_one_clear_error(tmp_path):
    for read in (read_gguf_info, read_raw_kv):
        with pytest.raises(ModelNotFound, match="nothere.gguf"):
            read(tmp_path / "nothere.gguf")


@pytest.mark.parametrize("cut", [3, 24, 4096])
def test_truncated_or_foreign_file_is_one_clear_error(tmp_path, cut):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bundled_model_path().read_bytes()[:cut])
    for read in (read_gguf_info, read_raw_kv):
        with pytest.raises(ModelNotFound, match="bad.gguf") as err:
            read(bad)
        assert "\n" not in str(err.value)
