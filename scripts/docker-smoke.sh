#!/usr/bin/env bash
# Replay the Dockerfile's runtime install (scripts/docker-install.sh) in a clean venv on
# this machine, with no Docker engine: then check the entry point the image would run.
# Uses setup.sh's cached llama-cpp-python wheel (run ./setup.sh once first).
#   FLAVOR=cpu|cuda  which cached wheel to use (default cpu)   KEEP=1  keep the temp venv
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR=${FLAVOR:-cpu}
WHEELS=${MINISIR_WHEEL_CACHE:-$HOME/.cache/minisir/wheels}/$FLAVOR
TMP=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$TMP"' EXIT
VENV="$TMP/venv"

echo "[smoke] install into a clean venv $VENV (wheels from $WHEELS)"
MINISIR_VENV="$VENV" WHEELS="$WHEELS" scripts/docker-install.sh

export PATH="$VENV/bin:$PATH" MINISIR_CACHE="$TMP/runs/.cache"
echo "[smoke] ENTRYPOINT minisir: --help"
minisir --help >/dev/null
echo "[smoke] a bad recipe is refused with one line and exit 2"
set +e
err=$(minisir run recipes/gemma2b.yaml --set run.dir="$TMP/runs/gemma2b" --set model.gguf=/nonexistent.gguf 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || { echo "[smoke] FAIL rc=$rc: $err" >&2; exit 1; }
echo "[smoke] the bundled model assembles and loads in llama.cpp"
minisir generate "1+1=" --max-tokens 4 >/dev/null
if [ "${RUN_STEP:-0}" = 1 ]; then
  echo "[smoke] one quickstart step in /runs-like dir, twice (the second resumes and adds nothing)"
  minisir run recipes/opensir-tiny.yaml --steps 1 --set run.dir="$TMP/runs/quick" --set run.steps=1
  minisir run recipes/opensir-tiny.yaml --steps 1 --set run.dir="$TMP/runs/quick" --set run.steps=1
fi
echo "[smoke] ok"
