#!/usr/bin/env bash
# The portfolio measurement (benchmarks/RESULTS.md, "portfolio"): the three real subsets, every
# adapter under the same wall-clock limit per dataset (profile wall5 of budgets.toml, 5 minutes; or
# PROFILE=wall10, 10 minutes), portfolio seeds 0, 1, 2 beside resnet18_28, autosklearn and baseline (seed 0).
#
# Interleaved (seed 0 of every method on each dataset first, then the portfolio's seeds 1 and 2),
# so that a measurement cut short is still a fair comparison on the datasets it finished. Each task
# is one harness run, under `flock /tmp/decathlon-bench.lock` so that no two engineers'
# measurements share the cores; `uptime` is logged before and after each. A task whose run
# directory already has a leaderboard is skipped, so rerunning the script resumes it.
# Then benchmarks/portfolio_merge.py gathers one leaderboard per adapter for `compare`.
#
#   bash benchmarks/portfolio_wall5.sh [OUT_DIR]      (default runs/wall5)
#   PROFILE=wall10 bash benchmarks/portfolio_wall5.sh  (10 minutes; default runs/wall10)
set -uo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-wall5}
out=${1:-runs/$profile}
data=${DECATHLON_DATA_DIR:-../shared/data/medmnist}
mkdir -p "$out"

task() {  # adapter dataset seed
  local dir="$out/$1-$2-seed$3"
  if [ -f "$dir/leaderboard.csv" ]; then
    echo "skip $1 $2 seed $3 (done)"
    return
  fi
  rm -rf "$dir"
  flock /tmp/decathlon-bench.lock bash -c "
    echo \"\$(date -u +%FT%TZ) start $1 $2 seed $3 load: \$(uptime | sed 's/.*load average: //')\" >> '$out/load.log'
    .venv/bin/python -m decathlon run --adapter $1 --profile $profile --datasets $2 --seeds $3 \
      --data-dir '$data' --no-download --no-progress --device cpu --jobs 2 --run-dir '$dir' \
      > '$out/$1-$2-seed$3.log' 2>&1
    echo \"\$(date -u +%FT%TZ) end   $1 $2 seed $3 load: \$(uptime | sed 's/.*load average: //')\" >> '$out/load.log'
  "
  tail -n 3 "$out/$1-$2-seed$3.log"
}

# Seed 0 of all four methods, dataset by dataset, then the portfolio's seeds 1 and 2: with the
# lock shared by several engineers' measurements, a cut-short run still compares all methods.
for dataset in breastmnist pneumoniamnist retinamnist; do
  task portfolio "$dataset" 0
  for adapter in resnet18_28 autosklearn baseline; do
    task "$adapter" "$dataset" 0
  done
done
for seed in 1 2; do
  for dataset in breastmnist pneumoniamnist retinamnist; do
    task portfolio "$dataset" "$seed"
  done
done
.venv/bin/python benchmarks/portfolio_merge.py "$out"
