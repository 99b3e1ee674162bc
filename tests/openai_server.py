"""llama-cpp-python's own OpenAI-compatible server, for the `sampler.backend: openai` tests.

    python tests/openai_server.py MODEL.gguf PORT [--lora-api]

Plain, it is exactly llama-cpp-python's server (which has no runtime adapter API, so
minisir must refuse it). With --lora-api it also answers vLLM's documented runtime LoRA
routes, `/v1/load_lora_adapter` and `/v1/unload_lora_adapter`: the named PEFT directory's
sibling `.gguf` (what minisir writes with it) is loaded into the served llama.cpp model,
and requests that name the adapter as their model sample with it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import llama_cpp
import uvicorn
from fastapi import Depends, HTTPException
from llama_cpp.server.app import create_app, get_llama_proxy
from llama_cpp.server.settings import ModelSettings, ServerSettings
from pydantic import BaseModel

from minisir.llama_runtime import amx_safe_defaults


class LoadLora(BaseModel):
    lora_name: str
    lora_path: str


class UnloadLora(BaseModel):
    lora_name: str


def add_lora_api(app) -> None:
    """vLLM's runtime LoRA routes on top of llama-cpp-python's app (one adapter active at a time)."""
    loaded: dict[str, object] = {}

    def activate(llm, adapter) -> None:
        arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter) if adapter else None
        scales = (ctypes.c_float * 1)(1.0) if adapter else None
        llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, arr, 1 if adapter else 0, scales)
        llm.reset()  # no prompt prefix cached under the old weights is reused

    @app.post("/v1/load_lora_adapter")
    def load(body: LoadLora, proxy=Depends(get_llama_proxy)):
        llm = proxy(None)
        gguf = Path(body.lora_path).with_suffix(".gguf")
        if not gguf.is_file():
            raise HTTPException(400, f"no GGUF adapter {gguf} next to {body.lora_path}")
        adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, str(gguf).encode())
        if not adapter:
            raise HTTPException(400, f"llama.cpp refused {gguf}")
        loaded[body.lora_name] = adapter
        activate(llm, adapter)
        return {"status": "ok"}

    @app.post("/v1/unload_lora_adapter")
    def unload(body: UnloadLora, proxy=Depends(get_llama_proxy)):
        adapter = loaded.pop(body.lora_name, None)
        if adapter is None:
            raise HTTPException(404, f"no adapter {body.lora_name}")
        llm = proxy(None)
        activate(llm, next(reversed(loaded.values()), None))
        llama_cpp.llama_adapter_lora_free(adapter)
        return {"status": "ok"}


def log_requested_models(path: str) -> None:
    """Append the model each request names to `path`: the tests see which adapter sampled."""
    from llama_cpp.server import model as server_model

    real = server_model.LlamaProxy.__call__

    def call(self, model=None):
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{model}\n")
        return real(self, model)

    server_model.LlamaProxy.__call__ = call


def main(model: str, port: int, lora_api: bool) -> None:
    if os.environ.get("MINISIR_TEST_SERVER_LOG"):
        log_requested_models(os.environ["MINISIR_TEST_SERVER_LOG"])
    settings = ModelSettings(model=model, model_alias="bundled", n_ctx=4096, n_threads=2, n_batch=256,
                             n_gpu_layers=0, verbose=False)
    with amx_safe_defaults():  # these CPUs crash in llama.cpp's AMX kernels
        app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=port), model_settings=[settings])
    if lora_api:
        add_lora_api(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--lora-api" in sys.argv[3:])
