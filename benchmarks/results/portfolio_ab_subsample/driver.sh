#!/bin/bash
# A/B: subsample=0 (default) against subsample=0.8, wall10, arms alternating (order flips by seed).
cd /work/ci-x2
D=runs/ab-bag
for task in "breastmnist 0" "retinamnist 0" "breastmnist 1" "retinamnist 1" "breastmnist 2" "retinamnist 2" "pneumoniamnist 0"; do
  set -- $task; ds=$1; seed=$2
  if [ $((seed % 2)) -eq 0 ]; then arms="0 0.8"; else arms="0.8 0"; fi
  for arm in $arms; do
    name=$ds-s$seed-b$arm
    echo "$(date -u +%H:%M:%S) start $name $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
    DECATHLON_HOME=/tmp/ci-home .venv/bin/python -m decathlon run --adapter portfolio --profile wall10 \
      --datasets $ds --seeds $seed --option subsample=$arm --data-dir /work/shared/data/medmnist \
      --no-download --no-progress --device cpu --jobs 2 --run-dir $D/$name > $D/$name.log 2>&1
    echo "$(date -u +%H:%M:%S) end $name rc=$? $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
  done
done
