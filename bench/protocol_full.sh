#!/usr/bin/env bash
# The paper's 20-epoch protocol at full scale: vgg11_cifar, the bundled cifar10 recipe,
# all 50,000 training images, the full test set, 20 epochs, seed 0: BN at lr 0.1 and 0.01, ND with the
# paper's settings and with preset fast. One run at a time, each resumed where it stopped (run it
# again after an interruption: finished runs are skipped, interrupted ones continue with --resume).
#
#   bash bench/protocol_full.sh [RUNS_DIR] [COMMIT]
#
# RUNS_DIR (default /root/nd48/runs) holds the run directories, outside the repository; COMMIT
# (default b45a168, the code the runs started with) is checked out in a clone beside it so that a
# run resumes on the code it started on. THREADS (default 1) threads: with one the other core stays
# free for other work; epoch-based results do not depend on the machine's speed.
set -u
RUNS=${1:-/root/nd48/runs}
COMMIT=${2:-b45a168}
ROOT=$(dirname "$RUNS")
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${NDECONV_CIFAR10:-$REPO/../shared/data/cifar10}
mkdir -p "$RUNS" "$ROOT/logs"
if [ ! -d "$ROOT/clone" ]; then git clone -q "$REPO" "$ROOT/clone" && git -C "$ROOT/clone" checkout -q "$COMMIT"; fi
export PYTHONPATH=$ROOT/clone OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
COMMON="cifar10 --model vgg11_cifar --data $DATA --epochs 20 --seed 0 --quiet"
run() {  # name, extra flags
  local dir=$RUNS/$1; shift
  [ -f "$dir/results.json" ] && return 0
  if [ -f "$dir/config.yaml" ]; then
    echo "$(date -u +%FT%TZ) resume $dir" >> "$ROOT/logs/events.log"
    python -m ndeconv train --resume "$dir" --quiet >> "$ROOT/logs/$(basename "$dir").log" 2>&1
  else
    rm -rf "$dir"
    echo "$(date -u +%FT%TZ) start $dir" >> "$ROOT/logs/events.log"
    python -m ndeconv train $COMMON --out "$dir" "$@" >> "$ROOT/logs/$(basename "$dir").log" 2>&1
  fi
  echo "$(date -u +%FT%TZ) exit $? $dir" >> "$ROOT/logs/events.log"
}
run nd-paper --norm deconv
run bn-lr0.1 --norm bn --lr 0.1
run bn-lr0.01 --norm bn --lr 0.01
run nd-fast --norm deconv --set model.deconv.preset=fast
