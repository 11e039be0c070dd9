#!/usr/bin/env bash
# The GPU checks of the ResNet and AutoKeras adapters, in one go, on a machine with an NVIDIA GPU
# whose python3 already has torch, torchvision, scikit-learn, numpy, pluggy, psutil and rich
# (and no network). Usage, from the repository root:
#   bash benchmarks/gpu_check.sh OUT_DIR DATA_DIR [WHEELS_DIR]
# DATA_DIR holds the real breastmnist/pneumoniamnist/retinamnist .npz files; WHEELS_DIR the
# pure-Python wheels of keras 3.12, keras-tuner, kt-legacy, autokeras 3.0, namex, optree, dm-tree
# (for AutoKeras on Keras' torch backend). Each step is time-boxed; results land in OUT_DIR.
set -u -o pipefail
out=$1 data=$2 wheels=${3:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 DECATHLON_HOME=/tmp/decathlon-home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$out/install.txt" 2>&1 \
  || { echo "install failed"; tail -5 "$out/install.txt"; }

# 1. Training throughput: the adapter's loop against a bare PyTorch loop, all four variants.
timeout 200 python3 benchmarks/resnet_throughput.py --device cuda --batches 30 --repeats 3 \
  --out-dir "$out" 2>&1 | tail -12

# 2. The paper's ResNet protocol (100 epochs) through the harness on the three real subsets.
for variant in resnet18_28 resnet18_224; do
  python3 -m decathlon setup "$variant" --adopt python3 >/dev/null
done
timeout 240 python3 -m decathlon run --adapter resnet18_28 --profile paper --device cuda \
  --datasets breastmnist,pneumoniamnist,retinamnist --data-dir "$data" --no-download \
  --no-progress --run-dir /tmp/gpu-resnet18_28 2>&1 | grep -E "seed0|mean" 
cp /tmp/gpu-resnet18_28/leaderboard.csv "$out/resnet18_28_leaderboard.csv"
timeout 150 python3 -m decathlon run --adapter resnet18_224 --profile paper --device cuda \
  --datasets breastmnist --data-dir "$data" --no-download --no-progress \
  --run-dir /tmp/gpu-resnet18_224 2>&1 | grep -E "seed0"
cp /tmp/gpu-resnet18_224/leaderboard.csv "$out/resnet18_224_leaderboard.csv"

# 3. AutoKeras, 2 trials x 2 epochs on breastmnist, Keras on the torch backend.
if [ -n "$wheels" ]; then
  timeout 240 python3 benchmarks/autokeras_gpu.py /tmp/gpu-ak --adopt-python python3 \
    --wheels "$wheels" --keras-backend torch --data-dir "$data" 2>&1 | tail -12
  cp /tmp/gpu-ak/summary.json "$out/autokeras_summary.json"
fi
