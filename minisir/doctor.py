"""`minisir doctor`: what is installed, what llama.cpp can do here, and what to fix."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PACKAGES = ("minisir", "llama-cpp-python", "torch", "transformers", "peft", "gguf",
            "sentence-transformers", "sqlite-utils", "math-verify")


def run_checks() -> tuple[dict[str, Any], list[str]]:
    """Return (report, problems); each problem names its fix."""
    report: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    problems: list[str] = []
    for name in PACKAGES:
        try:
            report[name] = version(name)
        except PackageNotFoundError:
            report[name] = "MISSING"
            problems.append(f"{name} is not installed: run the README's set-up command")

    try:
        from .llama_runtime import _llama, amx_workaround_needed

        ll = _llama()
        info = ll.llama_print_system_info().decode(errors="replace")
        gpu = bool(ll.llama_supports_gpu_offload())
        report["llama.cpp backend"] = ("CUDA" if "CUDA" in info else "Metal" if "METAL" in info.upper()
                                       else "GPU" if gpu else "CPU only")
        report["llama.cpp features"] = " ".join(
            part.split("=")[0].split(":")[-1].strip() for part in info.split("|") if part.strip().endswith("= 1")
        )
        report["AMX workaround"] = "active (use_extra_bufts=False)" if amx_workaround_needed() else "not needed"
    except Exception as exc:  # doctor reports everything it can
        problems.append(f"llama.cpp does not load ({exc}); reinstall llama-cpp-python==0.3.36")

    try:
        from .convert import find_converter

        report["llama.cpp converter"] = str(find_converter())
    except Exception as exc:  # only `minisir export` needs it
        report["llama.cpp converter"] = "MISSING"
        problems.append(str(exc).removeprefix("export: "))

    try:
        from .assets import bundled_model_path
        from .sampler import Sampler

        path = bundled_model_path()
        report["bundled model"] = str(path)
        with Sampler(path, n_ctx=512, n_parallel=1) as s:
            out = s.generate(["1 + 1 ="], n=1, max_tokens=4, temperature=0)[0][0]
        report["bundled model loads"] = f"yes ({s.n_vocab} tokens vocab, greedy '1 + 1 =' -> {out.text!r})"
    except Exception as exc:
        report["bundled model loads"] = "NO"
        problems.append(f"bundled model: {exc}")

    try:
        from .assets import embedder_path
        from .embed import Embedder

        report["embedder"] = embedder_path()
        emb = Embedder()
        report["embedder loads"] = f"yes (dim {emb.encode(['1+1']).shape[1]})"
    except Exception as exc:
        report["embedder loads"] = "NO"
        problems.append(f"embedder: {exc}")

    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            report["GPU"] = f"{torch.cuda.get_device_name(0)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
        else:
            report["GPU"] = "none visible to torch (training runs on CPU)"
    except Exception as exc:
        problems.append(f"torch does not import ({exc}); install torch first (see README)")
    return report, problems
