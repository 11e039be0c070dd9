#!/usr/bin/env bash
# `setup all` wall time, pip against uv, with empty caches and then with warm ones.
#
#   bash benchmarks/setup_bench.sh [OUT_DIR]      (from the repository root, harness venv in .venv)
#
# Each installer gets its own DECATHLON_HOME, UV_CACHE_DIR and PIP_CACHE_DIR under OUT_DIR
# (default /tmp/decathlon-setup-bench), so the shared ~/.cache is neither used nor touched.
# "cold": all three empty. "warm": the environments deleted, the installer's caches kept (what
# a second machine sharing a cache, or a rebuild after a lock change of one package, sees).
# Every measured build runs under `flock /tmp/decathlon-bench.lock` so that no two engineers'
# measurements overlap. Results: OUT_DIR/results.tsv and each build's markers.
set -euo pipefail
out=${1:-/tmp/decathlon-setup-bench}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
results="$out/results.tsv"
[ -f "$results" ] || printf 'installer\tcaches\tseconds\tload_before\tcommit\n' > "$results"
commit=$(git rev-parse --short HEAD)

measure() {  # installer caches
  local installer=$1 caches=$2 root="$out/$1"
  if [ "$caches" = cold ]; then
    rm -rf "$root"
  else
    rm -rf "$root/home/envs"
  fi
  mkdir -p "$root/home" "$root/uv-cache" "$root/pip-cache"
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  # Timed inside the lock: the wait for other engineers' measurements is not counted.
  DECATHLON_HOME="$root/home" UV_CACHE_DIR="$root/uv-cache" PIP_CACHE_DIR="$root/pip-cache" \
    flock /tmp/decathlon-bench.lock bash -c 's=$(date +%s.%N); "$@"; e=$(date +%s.%N);
      python3 -c "print(round($e - $s, 1))" > "'"$root/seconds"'"' _ \
    "$python" -m decathlon setup all --installer "$installer" > "$root/setup-$caches.log" 2>&1
  local seconds
  seconds=$(cat "$root/seconds")
  printf '%s\t%s\t%s\t%s\t%s\n' "$installer" "$caches" "$seconds" "$load" "$commit" >> "$results"
  for marker in "$root"/home/envs/*/decathlon-env.json; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  ', d['adapter'], d['installer'], d['build_seconds'], 's')" "$marker"
  done > "$root/per-env-$caches.txt"
  echo "$installer $caches: ${seconds} s (load $load)"
}

for installer in ${INSTALLERS:-pip uv}; do
  measure "$installer" cold
  measure "$installer" warm
  rm -rf "$out/$installer/home/envs"  # keep the disk free for the next installer
done
cat "$results"
