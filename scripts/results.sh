#!/usr/bin/env bash
# Reproduce RESULTS.md's comparison tables from finished runs (see RESULTS.md for the runs).
#   scripts/results.sh RUN_DIR [RUN_DIR ...]   -> RUN_DIR/results-<benchmark>.json and .md
# Base-model evaluations are cached (~/.cache/minisir/evals), so a second run's base is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
MINISIR=${MINISIR:-.venv/bin/minisir}
for run in "$@"; do
  for spec in "arithmetic-easy 300 4 192" "arithmetic-medium 100 4 192" "gsm8k-100 100 2 256"; do
    read -r bench n k max_tokens <<< "$spec"
    args=(eval "$run" --compare base,latest --benchmark "$bench" --n "$n" -k "$k" --max-tokens "$max_tokens")
    "$MINISIR" "${args[@]}" --json > "$run/results-$bench.json"
    "$MINISIR" "${args[@]}" > "$run/results-$bench.md"  # reuses both cached evaluations: the same table
  done
done
