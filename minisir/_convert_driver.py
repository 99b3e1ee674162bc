"""Subprocess half of minisir.convert: run llama.cpp's converter on one HF checkpoint directory.

Reads a JSON job on stdin (see convert.run_converter). Runs in its own process because the
converter imports its own, newer `gguf` package from gguf-py/, which must come first on
sys.path and must not meet the installed one.

One change to the converter: the vocabulary. minisir's models carry their tokenizer in the
GGUF the sampler loads, not as HF tokenizer files, and the exported model must tokenize exactly
as the sampler did; so instead of rebuilding a vocabulary from tokenizer files, every
`tokenizer.*` key of that GGUF is copied bit for bit.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main() -> None:
    job = json.load(sys.stdin)
    converter = Path(job["converter"])
    sys.path[:0] = [str(converter / "gguf-py"), str(converter)]
    import gguf  # the converter's own (gguf-py), first on sys.path
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    from minisir.gguf_info import RawValue, read_raw_kv

    if not gguf.__file__.startswith(str(converter)):
        raise SystemExit(f"imported gguf from {gguf.__file__}, not from {converter}/gguf-py")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    hf_dir, tokenizer = Path(job["hf_dir"]), Path(job["tokenizer_gguf"])
    hparams = ModelBase.load_hparams(hf_dir, False)
    base = get_model_class(get_model_architecture(hparams, ModelType.TEXT))

    class RawWriter(gguf.GGUFWriter):
        """Writes RawValue metadata verbatim."""

        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if isinstance(val, RawValue):
                return (self._pack("I", int(vtype)) if add_vtype else b"") + bytes(val)
            return super()._pack_val(val, vtype, add_vtype, sub_type=sub_type)

    class Model(base):  # type: ignore[misc, valid-type]
        model_arch = base.model_arch

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.gguf_writer.__class__ = RawWriter

        def set_vocab(self):
            for key, vtype, raw in read_raw_kv(tokenizer):
                self.gguf_writer.add_key_value(key, raw, gguf.GGUFValueType(vtype))

        def set_gguf_parameters(self):
            super().set_gguf_parameters()
            for name, args in job["writer_calls"]:
                getattr(self.gguf_writer, name)(*args)

    outtypes = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    with torch.inference_mode():
        model = Model(hf_dir, outtypes[job["outtype"]], Path(job["out"]), model_name=job.get("name"))
        model.write()


if __name__ == "__main__":
    main()
