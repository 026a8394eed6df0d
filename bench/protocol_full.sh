#!/usr/bin/env bash
# The paper's 20-epoch protocol at full scale: vgg11_cifar, the bundled cifar10 recipe,
# all 50,000 training images, the full test set, 20 epochs, seed 0: BN at lr 0.1 and 0.01, ND with the
# paper's settings and with preset fast. One run at a time, each resumed where it stopped (run it
# again after an interruption: finished runs are skipped, interrupted ones continue with --resume).
#
#   git clone . ../nd-protocol && bash ../nd-protocol/bench/protocol_full.sh [RUNS_DIR]
#
# The runs use the code of the checkout this script lives in (run it from a separate clone, so that
# editing your working tree does not change a run that resumes later). RUNS_DIR (default the
# clone's runs/protocol-full, ignored by git) holds the run directories. THREADS (default 1) threads:
# epoch-based results do not depend on the machine's speed.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-$REPO/runs/protocol-full}
LOGS=$(dirname "$RUNS")/logs
DATA=${NDECONV_CIFAR10:-$REPO/../shared/data/cifar10}
mkdir -p "$RUNS" "$LOGS"
cd "$REPO" || exit 1   # python -m ndeconv imports the package from here, not from an installed copy
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
COMMON="recipes/cifar10.yaml --model vgg11_cifar --data $DATA --epochs 20 --seed 0 --quiet"
run() {  # name, extra flags
  local dir=$RUNS/$1 status; shift
  [ -f "$dir/results.json" ] && return 0
  if [ -f "$dir/config.yaml" ]; then
    echo "$(date -u +%FT%TZ) resume $dir at $(git rev-parse --short HEAD)" >> "$LOGS/events.log"
    python -m ndeconv train --resume "$dir" --quiet >> "$LOGS/$(basename "$dir").log" 2>&1
  else
    rm -rf "$dir"
    echo "$(date -u +%FT%TZ) start $dir at $(git rev-parse --short HEAD)" >> "$LOGS/events.log"
    python -m ndeconv train $COMMON --out "$dir" "$@" >> "$LOGS/$(basename "$dir").log" 2>&1
  fi
  status=$?
  echo "$(date -u +%FT%TZ) exit $status $dir" >> "$LOGS/events.log"
  return "$status"
}
run nd-paper --norm deconv && run bn-lr0.1 --norm bn --lr 0.1 && run bn-lr0.01 --norm bn --lr 0.01 \
  && run nd-fast --norm deconv --set model.deconv.preset=fast
