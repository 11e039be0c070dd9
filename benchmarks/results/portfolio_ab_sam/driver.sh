#!/bin/bash
# A/B: the default portfolio against one with res-geo and vgg-geo replaced by their
# sharpness-aware versions and vgg-geo-mixup by vgg-geo-sgd (fourth, so that pneumoniamnist's
# four-configuration plans race it); wall10, arms alternating (the order flips with the seed).
cd /work/ci-x2
D=runs/ab-sam
SAM=res-geo-sam,res-geo-mixup,vgg-geo-sam,vgg-geo-sgd,res-flip-cutmix,wide-geo,res-flip,res2-geo,res-geo-long
for task in "breastmnist 0" "retinamnist 0" "pneumoniamnist 0" "breastmnist 1" "retinamnist 1" "pneumoniamnist 1"; do
  set -- $task; ds=$1; seed=$2
  if [ $((seed % 2)) -eq 0 ]; then arms="base sam"; else arms="sam base"; fi
  for arm in $arms; do
    name=$ds-s$seed-$arm
    opt=(); [ $arm = sam ] && opt=(--option configs=$SAM)
    echo "$(date -u +%H:%M:%S) start $name $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
    DECATHLON_HOME=/tmp/ci-home .venv/bin/python -m decathlon run --adapter portfolio --profile wall10 \
      --datasets $ds --seeds $seed "${opt[@]}" --data-dir /work/shared/data/medmnist \
      --no-download --no-progress --device cpu --jobs 2 --run-dir $D/$name > $D/$name.log 2>&1
    echo "$(date -u +%H:%M:%S) end $name rc=$? $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
  done
done
