#!/usr/bin/env bash
# The LoopCTR measurement table in one resumable command: on each dataset, LoopCTR trained with k = 1..4 loop
# passes (LoopCTR(1/k) is depth 1 of the k-pass run, LoopCTR(k/k) its depth k), the ablations of LoopCTR(1/3)
# (final-only supervision, no hyper-connections, unconstrained HC, HC around every layer, no MoE), the 2-layer
# loop block (configs/loopctr-loop2.yaml), a wider LoopCTR(1/3) with DIN's dense size and baselines beside them;
# then every LoopCTR run evaluated at every depth and the tables printed.
# Finished runs are skipped and interrupted ones resumed from their last epoch, so the table continues where it stopped.
#
# Usage: benchmarks/loopctr_table.sh OUT_DIR [DATASET ...]
#   datasets: amazon_beauty amazon_sports yelp (the reference splits), movielens_100k (rating >= 4 is a click,
#   global time split 8:1:1), frappe (the positive logs with two random negatives each, split 7:2:1; no sequence)
#   SEEDS="1 2 3" EPOCHS=N THREADS=1 LOOPCTR_SHARED=../shared
#   ONLY="k1 k3 dnn dcnv2" (LoopCTR variants below and any other model name; default: every variant, DIN, DNN)
#   FRACTION=0.1 trains every run on that share of the training users (data.train_fraction, users drawn with
#   fraction_seed 0; validation and test untouched); its runs are labelled <label>-f0.1
# Settings: the BARS AmazonElectronics_x1 trainer (batch 1024, Adam 5e-4, embedding L2 0.005), max_len 50,
# early stopping on valid AUC with patience 1, test AUC of the best epoch, a budget of 6 epochs. Frappe: the
# catalogue's BARS Frappe_x1 settings (embedding 10, batch 4096) with Adam 1e-3 and a budget of 10 epochs.
# MovieLens and Frappe train the LoopCTR variants at batch 1024: at the catalogue's 4096 an epoch is too few
# optimizer steps for them (chosen on validation AUC, BENCHMARKS.md); the baselines keep the catalogue's batch.
set -euo pipefail
out=${1:?usage: loopctr_table.sh OUT_DIR [DATASET ...]}; shift
datasets=${*:-amazon_beauty amazon_sports yelp}
seeds=$(echo "${SEEDS:-1 2 3}" | tr ' ' ',')
here=$(cd "$(dirname "$0")" && pwd)
shared=${LOOPCTR_SHARED:-$here/../../shared}

declare -A variant=(  # label -> settings of the loopctr model (on top of the model's defaults)
  [k1]="train_loops=1" [k2]="train_loops=2" [k3]="train_loops=3" [k4]="train_loops=4"
  [final-only]="train_loops=3 supervision=final" [no-hc]="train_loops=3 hc_mode=none"
  [hc-unconstrained]="train_loops=3 hc_mode=hc" [hc-per-layer]="train_loops=3 hc_placement=layer"
  [no-moe]="train_loops=3 n_experts=1"
  [loop2]="train_loops=3 n_loop_layers=2 n_experts=4"  # loop-dominated: 2 loop layers, 0.73 M dense parameters
  [wide]="train_loops=3 d_model=96 ffn_hidden=384"  # DIN's dense size: 1.20 M parameters on the x1 schema (DIN 1.32 M)
  # what makes passes differ (issue: make the loop pay), each on LoopCTR(1/3)
  [loop-emb]="train_loops=3 loop_embedding=true" [inject]="train_loops=3 input_injection=true"
  [random-depth]="train_loops=3 loop_sampling=random" [distill]="train_loops=3 distill_weight=1.0"
  [all-loop]="train_loops=3 loop_embedding=true input_injection=true loop_sampling=random distill_weight=1.0"
  # the ceiling of depth: three unshared loop layers, one pass (the compute of 3 passes, 3x the loop parameters)
  [unshared3]="train_loops=1 n_loop_layers=3"
)

for name in $datasets; do
  data="$out/data/$name"  # the runs go to $out/runs/$name/<label>-s<seed>
  labels=${ONLY:-k1 k2 k3 k4 final-only no-hc hc-unconstrained hc-per-layer no-moe loop2 wide din dnn}
  settings=(max_len=50) epochs=${EPOCHS:-6}
  suffix=""
  if [ -n "${FRACTION:-}" ]; then settings+=("train_fraction=$FRACTION"); suffix="-f$FRACTION"; fi
  by_architecture=""  # "ARCHITECTURE:key=value": a setting for every run of that model on this dataset
  case $name in
    amazon_beauty|amazon_sports|yelp)
      loopctr prepare --dataset amazon-electronics-x1 --source "$shared/data/benchmark_splits/$name" --out "$data" ;;
    movielens_100k)
      loopctr prepare --dataset movielens --source "$shared/data/movielens_100k" --out "$data" split=time
      # BST's 8 heads do not divide its 20-wide tokens (embedding 10)
      by_architecture="loopctr:batch_size=1024 bst:num_heads=2" ;;
    frappe)
      loopctr prepare --dataset frappe --source "$shared/data/frappe/ensfm_positives" --out "$data"
      labels=" $labels " settings=(lr=0.001) epochs=${EPOCHS:-10} by_architecture="loopctr:batch_size=1024"
      labels=${labels// din / } ;;  # DIN needs a behaviour sequence
    *) echo "unknown dataset $name" >&2; exit 2 ;;
  esac
  models=()
  for label in $labels; do
    if [ -n "${variant[$label]:-}" ]; then
      run=loopctr-$label$suffix architecture=loopctr
      models+=("$run=loopctr")
      for kv in ${variant[$label]}; do settings+=("$run:$kv"); done
    else
      run=$label$suffix architecture=$label
      models+=("$run=$label")
    fi
    for kv in $by_architecture; do
      if [[ $kv == "$architecture:"* ]]; then settings+=("$run:${kv#*:}"); fi
    done
  done
  python "$here/bench.py" --models "$(IFS=,; echo "${models[*]}")" --data "$data" --seeds "$seeds" \
    --out "$out/runs" --epochs "$epochs" "threads=${THREADS:-1}" early_stop_patience=1 "${settings[@]}"
  for run in "$out/runs/$name/loopctr-"*-s*; do
    if [ -f "$run/metrics.json" ] && [ ! -f "$run/eval.json" ]; then loopctr evaluate --run "$run" --depths all; fi
  done
  python "$here/summarize.py" "$out/runs/$name"
done
