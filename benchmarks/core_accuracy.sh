#!/usr/bin/env bash
# Accuracy of DNN and DIN on the Amazon Beauty reference split with the BARS AmazonElectronics_x1
# hyper-parameters (the model and train defaults: embedding 64, batch 1024, Adam lr 5e-4, embedding L2 0.005,
# DIN attention MLP [512,256] Dice with softmax, DNN [1024,512,256] Dice, batch norm, dropout 0.1).
# Train on train.csv, early-stop on valid.csv (AUC, patience 1, lr x0.1 on plateau), report test.csv.
# Usage: benchmarks/core_accuracy.sh OUT_DIR [SEEDS...]   (then: python benchmarks/summarize.py OUT_DIR)
set -euo pipefail
out=${1:?usage: core_accuracy.sh OUT_DIR [SEEDS...]}; shift
seeds=${*:-1 2 3}
split=${LOOPCTR_SHARED:-$(dirname "$0")/../../shared}/data/benchmark_splits/amazon_beauty
mkdir -p "$out"
loopctr prepare --dataset amazon-electronics-x1 --source "$split" --out "$out/data"
common=(epochs=10 early_stop_patience=1 threads=${THREADS:-1})
for seed in $seeds; do
  for spec in "din max_len=50" "din max_len=100" "dnn max_len=100"; do
    set -- $spec
    name="$1-$(echo "$2" | tr -d '=_')-s$seed"
    [ -f "$out/$name/metrics.json" ] && continue
    rm -rf "$out/$name"
    loopctr train --data "$out/data" --model "$1" --out "$out/$name" "$2" seed="$seed" "${common[@]}"
  done
done
