#!/usr/bin/env bash
# The portfolio's GPU check (issue 19), sized to a lease of one GPU for minutes, not the paper's
# hours: on a machine whose python3 already has torch, scikit-learn, numpy, pluggy, psutil and
# rich (and no network). From the repository root:
#
#   bash benchmarks/portfolio_gpu.sh OUT_DIR DATA_DIR
#
# DATA_DIR holds the real breastmnist/pneumoniamnist/retinamnist .npz files. Three steps, each
# time-boxed; under OUT_DIR: the GPU (gpu.txt) and its use every 5 s (gpu_use.csv), each task's
# row (real_rows.txt, decathlon_rows.txt) and runs.tar.gz (every task's run directory and log,
# and one leaderboard per adapter of step 2 in gpu-wall5xSCALE/merged/):
#  1. smoke: the portfolio on breastmnist for 30 s; the script stops here if that fails.
#  2. the three real subsets at profile wall5 times SCALE (default 1: 300 s per dataset), all
#     at once on the one GPU: the portfolio seeds 0, 1, 2, resnet18_28 (the paper's 100 epochs)
#     and baseline seed 0 beside it; then one leaderboard per adapter (portfolio_merge.py).
#  3. a whole decathlon of generated data with the published numbers of images, all ten at
#     once, at the paper's budget times DECATHLON_SCALE (default 0.005: 36 / 72 / 108 s by
#     tier): every task type at its real size, and each task's wall time against its limit.
# STEPS=2 (or 3, 23...) runs only those steps after the smoke. On an H200 (2026-12-04) all three
# at SCALE=0.7 took 347 s, step 2 alone at SCALE=1 289 s (benchmarks/RESULTS.md).
# DEVICE=cpu runs the same on a CPU (to try the script without a GPU, with small scales).
set -u -o pipefail
out=$(realpath -m "$1") data=$(realpath "$2")
device=${DEVICE:-cuda} scale=${SCALE:-1.0} dscale=${DECATHLON_SCALE:-0.005} steps=${STEPS:-123}
runs=${RUNS_DIR:-/tmp/portfolio-gpu}
mkdir -p "$out" && rm -rf "$runs" && mkdir -p "$runs/gpu-wall5x$scale" "$runs/decathlon"
export PYTHONUNBUFFERED=1 DECATHLON_HOME=${DECATHLON_HOME:-/tmp/decathlon-home}
say() { echo "$(date -u +%T) $*"; }
pack() {  # every file under 1 MB (leaderboards, notes, logs); the larger ones only listed
  (cd "$(dirname "$runs")" && find "$(basename "$runs")" -type f -size +1024k -exec ls -l {} + \
    > "$runs/large_files.txt"; find "$(basename "$runs")" -type f -size -1025k \
    | tar czf "$out/runs.tar.gz" -T -)
}

say "machine: $(nproc) cores; $(python3 --version)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
    > "$out/gpu_use.csv" 2>&1 &
  sampler=$!
  trap 'kill $sampler 2>/dev/null' EXIT
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$runs/install.txt" 2>&1 \
  || { say "install failed"; tail -5 "$runs/install.txt"; exit 1; }
python3 -m decathlon setup portfolio resnet18_28 --adopt python3 >/dev/null || exit 1

task() {  # folder adapter dataset seed profile scale [run options...]
  local dir=$1 adapter=$2 dataset=$3 seed=$4 profile=$5 factor=$6
  shift 6
  python3 -m decathlon run --adapter "$adapter" --profile "$profile" --scale-factor "$factor" \
    --datasets "$dataset" --seeds "$seed" --no-download --no-progress --device "$device" \
    --jobs 1 --run-dir "$dir/$adapter-$dataset-seed$seed" "$@" \
    > "$dir/$adapter-$dataset-seed$seed.log" 2>&1
  echo "$adapter $dataset seed $seed: exit $?"
}
rows() {  # each task's test row: adapter, dataset, seed, status, AUC, ACC, wall time/limit
  python3 - "$1" <<'PY'
import csv, glob, sys
for path in sorted(glob.glob(f"{sys.argv[1]}/*/leaderboard.csv")):
    for r in csv.DictReader(open(path)):
        if r["split"] == "test" and r["dataset"] != "decathlon":
            print(*(r[k] for k in ("adapter", "dataset", "seed", "status", "auc", "acc")),
                  f"{float(r['elapsed_s']):.1f}/{float(r['hard_limit_s']):.0f}s", r["reason"][:100])
PY
}

say "1. smoke: portfolio, breastmnist, 30 s"
task "$runs" portfolio breastmnist 0 wall5 0.1 --data-dir "$data"
if ! grep -q ",ok," "$runs/portfolio-breastmnist-seed0/leaderboard.csv" 2>/dev/null; then
  say "smoke failed"; tail -40 "$runs/portfolio-breastmnist-seed0.log"
  find "$runs" -name "*.log" -path "*tasks*" -exec tail -30 {} \;
  pack; exit 1
fi
rows "$runs"

if [[ $steps == *2* ]]; then
  say "2. real subsets, wall5 x $scale, all at once"
  pids=()
  for dataset in breastmnist pneumoniamnist retinamnist; do
    for seed in 0 1 2; do
      task "$runs/gpu-wall5x$scale" portfolio "$dataset" "$seed" wall5 "$scale" --data-dir "$data" &
      pids+=($!)
    done
    task "$runs/gpu-wall5x$scale" resnet18_28 "$dataset" 0 wall5 "$scale" --data-dir "$data" &
    pids+=($!)
    task "$runs/gpu-wall5x$scale" baseline "$dataset" 0 wall5 "$scale" --data-dir "$data" &
    pids+=($!)
  done
  wait "${pids[@]}"
  rows "$runs/gpu-wall5x$scale" | tee "$out/real_rows.txt"
  python3 benchmarks/portfolio_merge.py "$runs/gpu-wall5x$scale"
  say "2. done"
fi
if [[ $steps == *3* ]]; then
  say "3. generated decathlon, published sizes, paper x $dscale, all at once"
  python3 -m decathlon generate "$runs/catalog" --published || { pack; exit 1; }
  say "generated"
  export DECATHLON_INFO=$runs/catalog/info.json
  pids=()
  for dataset in $(python3 -c "import json; print(*json.load(open('$DECATHLON_INFO'))['datasets'])"); do
    task "$runs/decathlon" portfolio "$dataset" 0 paper "$dscale" --data-dir "$runs/catalog/data" &
    pids+=($!)
  done
  wait "${pids[@]}"
  rm -rf "$runs/catalog"
  say "3. done"
  rows "$runs/decathlon" | tee "$out/decathlon_rows.txt"
fi
pack
say "packed: $(du -h "$out/runs.tar.gz" | cut -f1)"
