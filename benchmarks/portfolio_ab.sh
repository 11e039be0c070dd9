#!/usr/bin/env bash
# Side-by-side (A/B) runs of the portfolio (benchmarks/RESULTS.md, every "side by side" section):
# two arms, each a name and the `--option`s it adds (none = the default), on the tasks given,
# under one profile (PROFILE, default wall10). Each task runs both arms back to back, the order
# flipping with the seed (even: A first), so that a drift of the machine falls on both; `uptime`
# is logged at each start and end, and every run is one harness run under
# `flock /tmp/decathlon-bench.lock`. A run whose directory already has a leaderboard is skipped,
# so rerunning resumes.
#
#   bash benchmarks/portfolio_ab.sh OUT_DIR ARM_A ARM_B DATASET:SEED ...
#   ARM: NAME (the default), or NAME:KEY=VALUE for the one option that arm adds
#
#   bash benchmarks/portfolio_ab.sh runs/ab-sam base \
#       sam:configs=res-geo-sam,res-geo-mixup,vgg-geo-sam,vgg-geo-sgd,res-flip-cutmix,wide-geo,res-flip,res2-geo,res-geo-long \
#       breastmnist:0 retinamnist:0 pneumoniamnist:0 breastmnist:1 retinamnist:1
set -uo pipefail
[ $# -ge 4 ] || { echo "usage: $0 OUT_DIR ARM_A ARM_B DATASET:SEED ..." >&2; exit 2; }
cd "$(dirname "$0")/.."
profile=${PROFILE:-wall10}
data=${DECATHLON_DATA_DIR:-../shared/data/medmnist}
out=$1 arm_a=$2 arm_b=$3
shift 3
mkdir -p "$out"

run() {  # arm dataset seed
  local name=${1%%:*} opts=() dir
  [ "$1" != "$name" ] && opts=(--option "${1#*:}")
  dir="$out/$2-s$3-$name"
  if [ -f "$dir/leaderboard.csv" ]; then
    echo "skip $2 seed $3 $name (done)"
    return
  fi
  rm -rf "$dir"
  flock /tmp/decathlon-bench.lock bash -c '
    echo "$(date -u +%H:%M:%S) start $1 $(cut -d" " -f1-3 /proc/loadavg)" >> "$2/load.log"
    "${@:3}" > "$2/$1.log" 2>&1
    rc=$?
    echo "$(date -u +%H:%M:%S) end $1 rc=$rc $(cut -d" " -f1-3 /proc/loadavg)" >> "$2/load.log"
  ' _ "$2-s$3-$name" "$out" .venv/bin/python -m decathlon run --adapter portfolio \
    --profile "$profile" --datasets "$2" --seeds "$3" "${opts[@]}" --data-dir "$data" \
    --no-download --no-progress --device cpu --jobs 2 --run-dir "$dir"
  cp "$dir/leaderboard.csv" "$out/$2-s$3-$name.csv" 2>/dev/null
}

for task in "$@"; do
  dataset=${task%%:*} seed=${task#*:}
  if [ $((seed % 2)) -eq 0 ]; then
    run "$arm_a" "$dataset" "$seed"; run "$arm_b" "$dataset" "$seed"
  else
    run "$arm_b" "$dataset" "$seed"; run "$arm_a" "$dataset" "$seed"
  fi
done
