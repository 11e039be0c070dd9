#!/bin/bash
# A/B: the new default portfolio (commit 0028d75) against the one before it, named with the
# option configs; wall10, arms alternating (order flips with the seed).
cd /work/ci-x2
D=runs/ab-cfg
OLD="res-geo,res-geo-mixup,vgg-geo,res-flip-cutmix,wide-geo,res-flip,vgg-geo-mixup,res2-geo,res-geo-long"
for task in "pneumoniamnist 0" "retinamnist 0" "breastmnist 0" "pneumoniamnist 1" "retinamnist 1" "breastmnist 1"; do
  set -- $task; ds=$1; seed=$2
  if [ $((seed % 2)) -eq 0 ]; then arms="old new"; else arms="new old"; fi
  for arm in $arms; do
    name=$ds-s$seed-$arm
    opt=(); [ $arm = old ] && opt=(--option configs=$OLD)
    echo "$(date -u +%H:%M:%S) start $name $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
    DECATHLON_HOME=/tmp/ci-home .venv/bin/python -m decathlon run --adapter portfolio --profile wall10 \
      --datasets $ds --seeds $seed "${opt[@]}" --data-dir /work/shared/data/medmnist \
      --no-download --no-progress --device cpu --jobs 2 --run-dir $D/$name > $D/$name.log 2>&1
    echo "$(date -u +%H:%M:%S) end $name rc=$? $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
  done
done
