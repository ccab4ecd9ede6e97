#!/usr/bin/env bash
# The main job: how should the learning rate go down for a Fashion-MNIST MLP? Trains one model with a
# step schedule (per-epoch table, loss and rate plot), runs the LR range test for three optimizers, then
# sweeps constant, step, exponential and polynomial decay for Adam, RMSprop and Adagrad and ranks them.
# Runs on the GPU when one is present; 53-84 s on an idle 2-core CPU (BENCHMARKS.md).
set -euo pipefail
build=${1:-build}
lrlab="$build/lrlab"
out=${LRLAB_DEMO_OUT:-demo-out}
mkdir -p "$out"

# LRLAB_DEMO_DATA=spirals runs the same steps on the built-in set in seconds (the test of this script).
data=${LRLAB_DEMO_DATA:-fashion-mnist}
if [ "$data" = fashion-mnist ] && ! [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
  [ -z "${LRLAB_FASHION_MNIST_DIR:-}" ]; then
  if [ "$(id -u)" -eq 0 ] && scripts/deps.sh >/dev/null 2>&1; then
    :
  else
    echo "note: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); using the built-in spirals set"
    data=spirals
  fi
fi
hidden=256,128
[ "$data" = spirals ] && hidden=64,64

echo "== 1. One training run: Adam 1e-3, halved every epoch =="
"$lrlab" train --data "$data" --hidden "$hidden" --optimizer "adam()" --lr 1e-3 \
  --schedule "step(every=1ep,gamma=0.5)" --epochs 3 --batch 128 --seed 0 --quiet \
  --plot "$out/train.svg" --json "$out/train.json" --log "$out/train.csv"
echo "loss and learning-rate curves: $out/train.svg"
echo

echo "== 2. LR range test for each optimizer =="
"$lrlab" find-lr --data "$data" --hidden "$hidden" --optimizer "adam()" "rmsprop()" "adagrad()" \
  --steps 100 --plot "$out/find-lr.svg" --json "$out/find-lr.json"
echo "range-test curves: $out/find-lr.svg"
echo

# The rates reach 0.3, where RMSprop diverges and Adam stalls: every optimizer's best rate then lies
# inside the grid, so the sweep answers the question instead of pointing past its edge.
echo "== 3. Sweep: 4 schedules x 3 optimizers x 4 rates, trained together =="
"$lrlab" sweep --data "$data" --hidden "$hidden" --lr 3e-4:0.3:4 \
  --schedule constant "step(every=1ep,gamma=0.5)" "exp(gamma=0.7,every=1ep)" "poly(steps=3ep)" \
  --optimizer "adam()" "rmsprop()" "adagrad()" --epochs 3 --batch 128 --out "$out/sweep"
