#!/bin/bash
# A/B: precision=auto (bfloat16 training on this CPU) against precision=fp32; wall10, arms
# alternating (the order flips with the seed).
cd /work/ci-x2
D=runs/ab-bf16
for task in "breastmnist 0" "pneumoniamnist 0" "retinamnist 0" "breastmnist 1" "retinamnist 1" "pneumoniamnist 1"; do
  set -- $task; ds=$1; seed=$2
  if [ $((seed % 2)) -eq 0 ]; then arms="fp32 bf16"; else arms="bf16 fp32"; fi
  for arm in $arms; do
    name=$ds-s$seed-$arm
    opt=(); [ $arm = fp32 ] && opt=(--option precision=fp32)
    echo "$(date -u +%H:%M:%S) start $name $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
    DECATHLON_HOME=/tmp/ci-home .venv/bin/python -m decathlon run --adapter portfolio --profile wall10 \
      --datasets $ds --seeds $seed "${opt[@]}" --data-dir /work/shared/data/medmnist \
      --no-download --no-progress --device cpu --jobs 2 --run-dir $D/$name > $D/$name.log 2>&1
    echo "$(date -u +%H:%M:%S) end $name rc=$? $(cut -d' ' -f1-3 /proc/loadavg)" >> $D/load.log
  done
done
