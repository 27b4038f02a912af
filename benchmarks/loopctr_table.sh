#!/usr/bin/env bash
# The LoopCTR measurement table in one resumable command: on each reference split, LoopCTR trained with
# k = 1..4 loop passes (LoopCTR(1/k) is depth 1 of the k-pass run, LoopCTR(k/k) its depth k), the ablations of
# LoopCTR(1/3) (final-only supervision, no hyper-connections, unconstrained HC, HC around every layer, no MoE),
# the 2-layer loop block (configs/loopctr-loop2.yaml) and DIN / DNN beside them; then every LoopCTR run evaluated
# at every depth and the tables printed.
# Finished runs are skipped and interrupted ones resumed from their last epoch, so the table continues where it stopped.
#
# Usage: benchmarks/loopctr_table.sh OUT_DIR [SPLIT ...]        (splits: amazon_beauty amazon_sports yelp)
#   SEEDS="1 2 3" EPOCHS=6 THREADS=1 ONLY="k1 k3" (a subset of the variants below) LOOPCTR_SHARED=../shared
# Settings: the BARS AmazonElectronics_x1 trainer (batch 1024, Adam 5e-4, embedding L2 0.005), max_len 50,
# early stopping on valid AUC with patience 1, a budget of EPOCHS epochs, test AUC of the best epoch.
set -euo pipefail
out=${1:?usage: loopctr_table.sh OUT_DIR [SPLIT ...]}; shift
splits=${*:-amazon_beauty amazon_sports yelp}
seeds=$(echo "${SEEDS:-1 2 3}" | tr ' ' ',')
here=$(cd "$(dirname "$0")" && pwd)
shared=${LOOPCTR_SHARED:-$here/../../shared}

declare -A variant=(  # label -> settings of the loopctr model (on top of the model's defaults)
  [k1]="train_loops=1" [k2]="train_loops=2" [k3]="train_loops=3" [k4]="train_loops=4"
  [final-only]="train_loops=3 supervision=final" [no-hc]="train_loops=3 hc_mode=none"
  [hc-unconstrained]="train_loops=3 hc_mode=hc" [hc-per-layer]="train_loops=3 hc_placement=layer"
  [no-moe]="train_loops=3 n_experts=1"
  [loop2]="train_loops=3 n_loop_layers=2 n_experts=4"  # loop-dominated: 2 loop layers, 0.73 M dense parameters
)
labels=${ONLY:-k1 k2 k3 k4 final-only no-hc hc-unconstrained hc-per-layer no-moe loop2 din dnn}

for split in $splits; do
  data="$out/data/$split"  # the runs go to $out/runs/$split/<variant>-s<seed>
  loopctr prepare --dataset amazon-electronics-x1 --source "$shared/data/benchmark_splits/$split" --out "$data"
  models=() settings=()
  for label in $labels; do
    case $label in
      din|dnn) models+=("$label") ;;
      *) models+=("loopctr-$label=loopctr")
         for kv in ${variant[$label]:?unknown variant $label}; do settings+=("loopctr-$label:$kv"); done ;;
    esac
  done
  python "$here/bench.py" --models "$(IFS=,; echo "${models[*]}")" --data "$data" --seeds "$seeds" \
    --out "$out/runs" --epochs "${EPOCHS:-6}" "threads=${THREADS:-1}" max_len=50 early_stop_patience=1 \
    "${settings[@]}"
  for run in "$out/runs/$split/loopctr-"*-s*; do
    if [ -f "$run/metrics.json" ] && [ ! -f "$run/eval.json" ]; then loopctr evaluate --run "$run" --depths all; fi
  done
  python "$here/summarize.py" "$out/runs/$split"
done
