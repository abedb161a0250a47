#!/usr/bin/env bash
# Equal-minute probes of photo rotation recipes on the Tiny ImageNet copy, one after another in one
# sitting (nothing else running: two processes on two cores thrash and re-fit each other's budgets).
# Each is `python -m ssl_core bench --to-accuracy` (the engine with a --minutes budget): the quick
# probe per epoch and, at the end, rotation accuracy on all 10,026 test photos x 4 turns.
#
#   bash bench/photo_rotation_probes.sh DATA_DIR [MINUTES] [CANDIDATES]   # default 15 minutes, all
#
# CANDIDATES: a comma-separated subset of the names below (a-width48,c-width48-depth2, ...).
#
# The candidates: the recipe of run 1 (width 48, 0.749 after 360 min), a wider network, a deeper
# one (--depth 2, its extra convs at the smallest maps), and run 1's network with less
# regularisation (it underfit: training loss 0.745 against the 0.349 that smoothing allows).
# Output: bench/out/photo-rotation-probes.txt, one summary line per candidate at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash bench/photo_rotation_probes.sh DATA_DIR [MINUTES]}
MINUTES=${2:-15}
ONLY=${3:-}
OUT=bench/out
mkdir -p "$OUT"
LOG="$OUT/photo-rotation-probes.txt"
common=(--to-accuracy --dataset folder --data-dir "$DATA" --image-size 64 --stem-stride 2 --recipes project
        --tasks rotation --minutes "$MINUTES")
declare -A CANDIDATES=(
  [a-width48]="--width 48"
  [b-width64]="--width 64"
  [c-width48-depth2]="--width 48 --depth 2"
  [d-width48-less-regularised]="--width 48 --weight-decay 0.00005 --label-smoothing 0"
)
{ date -u +%FT%TZ; lscpu | grep -E "Model name|^CPU\(s\)"; } | tee "$LOG"
for name in $(printf '%s\n' "${!CANDIDATES[@]}" | sort); do
  if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then continue; fi
  echo "== $name: ${CANDIDATES[$name]}" | tee -a "$LOG"
  # shellcheck disable=SC2086  # the candidate's settings are words
  python -m ssl_core bench "${common[@]}" ${CANDIDATES[$name]} 2>&1 | tr '\r' '\n' | grep -av "step/s" | tee -a "$LOG"
done
echo "== summary" | tee -a "$LOG"
grep -E "^== [a-z]|^rotation project:" "$LOG" | tee -a "$LOG"
