"""Parity with FuxiCTR: its DIN and DCNv2 and ours, on the same CSV split, with the BARS AmazonElectronics_x1
hyper-parameters, printed side by side (test AUC, gAUC, logloss, training and evaluation samples/s).

    git clone https://github.com/reczoo/FuxiCTR ~/FuxiCTR          # model_zoo is not in the pip package
    FUXICTR_MODEL_ZOO=~/FuxiCTR/model_zoo python benchmarks/fuxictr_parity.py \
        --split ../shared/data/benchmark_splits/amazon_beauty --out /tmp/parity [--models din,dcnv2]
        [--epochs 100] [--threads 1] [--seed 2024] [--max-len 100] [--rows N] [--skip-fuxictr] [--venv DIR]

FuxiCTR runs in its own virtual environment (created once under --venv, default ~/.cache/loopctr-fuxictr-venv,
with `fuxictr==2.3.10` and `polars<2`; torch is taken from this environment unless the venv has its own).
It is driven by a small script of ours that calls FuxiCTR's public API the way the model zoo's run_expid.py
does (FeatureProcessor, build_dataset, FeatureMap, RankDataLoader without `.make_iterator()`, which 2.3.10
does not have, then model.fit / evaluate / predict), and adds the timing: training samples/s excludes the
per-epoch validation (as ours does), evaluation samples/s is `predict` on the test split. Both sides train on
train.csv, early-stop on valid.csv (BARS monitors: gAUC for DIN, AUC + gAUC for DCNv2; patience 2, learning
rate x0.1 on plateau), reload the best epoch and report test.csv. `--rows N` keeps the first N rows of every
split (to check the plumbing quickly); `--skip-fuxictr` runs our side only.
No FuxiCTR code is copied here: the FuxiCTR side imports the installed package and the user's model zoo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

FUXICTR_PIN = ["fuxictr==2.3.10", "polars<2"]
DEFAULT_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark_splits" / "amazon_beauty"


# BARS AmazonElectronics_x1 (FuxiCTR v2.0.1 logs: DIN_amazonelectronics_x1_015, DCNv2_amazonelectronics_x1_010).
# "active" is required: FeatureProcessor.fit reads col["active"] without a default.
def feature_cols(max_len: int) -> list[dict]:
    return [
        {"name": "user_id", "active": True, "type": "meta", "dtype": "int", "remap": False},
        {"name": "item_id", "active": True, "type": "categorical", "dtype": "str"},
        {"name": "cate_id", "active": True, "type": "categorical", "dtype": "str"},
        *({"name": name, "active": True, "type": "sequence", "dtype": "str", "splitter": "^", "max_len": max_len,
           "share_embedding": share, "padding": "pre", "feature_encoder": "layers.MaskedAveragePooling()"}
          for name, share in (("item_history", "item_id"), ("cate_history", "cate_id"))),
    ]


COMMON = {"data_format": "csv", "label_col": {"name": "label", "dtype": "float"}, "group_id": "user_id",
          "min_categr_count": 1, "embedding_dim": 64, "batch_size": 1024, "learning_rate": 5e-4,
          "optimizer": "adam", "loss": "binary_crossentropy", "task": "binary_classification",
          "embedding_regularizer": 0.005, "net_regularizer": 0, "early_stop_patience": 2,
          "metrics": ["gAUC", "AUC", "logloss"], "monitor_mode": "max", "shuffle": True, "verbose": 0,
          "save_best_only": True, "num_workers": 3}
MODELS = {
    "din": {
        "zoo": "DIN",
        "fuxictr": {"model": "DIN", "monitor": "gAUC", "dnn_hidden_units": [1024, 512, 256], "dnn_activations": "Dice",
                    "attention_hidden_units": [512, 256], "attention_hidden_activations": "Dice",
                    "attention_output_activation": None, "attention_dropout": 0.1, "din_use_softmax": True,
                    "din_target_field": [["item_id", "cate_id"]],
                    "din_sequence_field": [["item_history", "cate_history"]],
                    "net_dropout": 0.1, "batch_norm": True,
                    "feature_specs": [{"name": "item_history", "feature_encoder": None},
                                      {"name": "cate_history", "feature_encoder": None}]},
        "ours": ["monitor=gauc"],  # every other setting is DIN's / the trainer's default (= BARS)
    },
    "dcnv2": {
        "zoo": "DCNv2",
        "fuxictr": {"model": "DCNv2", "monitor": {"AUC": 1, "gAUC": 1}, "model_structure": "parallel",
                    "use_low_rank_mixture": False, "low_rank": 32, "num_experts": 4, "num_cross_layers": 2,
                    "stacked_dnn_hidden_units": [500, 500, 500], "parallel_dnn_hidden_units": [1024, 512, 256],
                    "dnn_activations": "relu", "net_dropout": 0, "batch_norm": True},
        "ours": ["monitor=auc+gauc"],
    },
}
OURS_COMMON = ["early_stop_patience=2", "plateau_factor=0.1"]

# Runs inside the FuxiCTR virtualenv: argv[1] is a JSON job file, the result is written to job["result"].
DRIVER = r'''
import json, os, sys, time
job = json.load(open(sys.argv[1]))
import ray
import torch
torch.set_num_threads(job["threads"])
# FuxiCTR's data pipeline runs on Ray, which would otherwise take every core; started first, FuxiCTR reuses it
ray.init(num_cpus=job["threads"], include_dashboard=False, logging_level="ERROR")
sys.path.insert(0, job["model_dir"])
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.torch_utils import seed_everything
from fuxictr.utils import set_logger
import src

params = job["params"]
set_logger(params)  # as run_expid.py: creates model_root/dataset_id, where fit saves the best checkpoint
for key in ("din_target_field", "din_sequence_field"):
    if key in params:
        params[key] = [tuple(x) if isinstance(x, list) else x for x in params[key]]
seed_everything(seed=params["seed"])
processor = FeatureProcessor(feature_cols=params["feature_cols"], label_col=params["label_col"],
                             dataset_id=params["dataset_id"], data_root=params["data_root"],
                             group_id=params["group_id"])
params["train_data"], params["valid_data"], params["test_data"] = build_dataset(
    processor, train_data=params["train_data"], valid_data=params["valid_data"], test_data=params["test_data"],
    data_format="csv")
data_dir = os.path.join(params["data_root"], params["dataset_id"])
feature_map = FeatureMap(params["dataset_id"], data_dir)
feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
model = getattr(src, params["model"])(feature_map, **params)
n_params = sum(p.numel() for p in model.parameters())
train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
eval_seconds = [0.0]
evaluate = model.evaluate
def timed_evaluate(*args, **kwargs):
    start = time.perf_counter()
    try:
        return evaluate(*args, **kwargs)
    finally:
        eval_seconds[0] += time.perf_counter() - start
model.evaluate = timed_evaluate
start = time.perf_counter()
model.fit(train_gen, validation_data=valid_gen, **params)
fit_seconds = time.perf_counter() - start
model.evaluate = evaluate
epochs_run = model._epoch_index + 1
best_epoch = epochs_run - model._stopping_steps  # _stopping_steps: epochs since the last improvement
valid = model.evaluate(valid_gen)
test_gen = RankDataLoader(feature_map, stage="test", **params)
start = time.perf_counter()
preds = model.predict(test_gen)
predict_seconds = time.perf_counter() - start
test = model.evaluate(test_gen)
train_rows = train_gen.num_samples
json.dump({"auc": test["AUC"], "gauc": test["gAUC"], "logloss": test["logloss"], "valid_auc": valid["AUC"],
           "best_epoch": best_epoch, "epochs_run": epochs_run, "params_total": n_params,
           "train_samples_per_s": train_rows * epochs_run / max(fit_seconds - eval_seconds[0], 1e-9),
           "eval_samples_per_s": len(preds) / max(predict_seconds, 1e-9)}, open(job["result"], "w"), indent=2)
'''


def subset_split(split: Path, rows: int | None, out: Path) -> Path:
    """The split itself, or a copy of the first `rows` rows of each of its CSVs."""
    if not rows:
        return split
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "valid.csv", "test.csv"):
        with open(split / name) as src, open(out / name, "w") as dst:
            for i, line in enumerate(src):
                if i > rows:
                    break
                dst.write(line)
    return out


def ensure_venv(path: Path) -> Path:
    """A virtualenv with FuxiCTR 2.3.10; returns its python. torch is borrowed from this environment."""
    python = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    if not python.exists():
        print(f"creating {path} and installing {' '.join(FUXICTR_PIN)} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(path)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *FUXICTR_PIN], check=True)
    if subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0:
        import torch

        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        # appended after the venv's own packages, so FuxiCTR's pinned dependencies take precedence
        Path(site, "loopctr_torch.pth").write_text(str(Path(torch.__file__).resolve().parents[1]) + "\n")
    return python


def run_fuxictr(model: str, python: Path, zoo: Path, split: Path, work: Path, epochs: int, threads: int,
                seed: int, max_len: int) -> dict:
    spec = MODELS[model]
    work.mkdir(parents=True, exist_ok=True)
    params = {**COMMON, **spec["fuxictr"], "feature_cols": feature_cols(max_len), "epochs": epochs, "seed": seed,
              "dataset_id": f"parity_len{max_len}_" + hashlib.md5(str(split.resolve()).encode()).hexdigest()[:8],
              "data_root": str(work / "data"),
              "model_root": str(work / "checkpoints"), "model_id": f"{spec['zoo']}_parity",
              "train_data": str(split / "train.csv"), "valid_data": str(split / "valid.csv"),
              "test_data": str(split / "test.csv")}
    job = {"params": params, "threads": threads, "model_dir": str(zoo / spec["zoo"]),
           "result": str(work / f"{model}_fuxictr.json")}
    (work / "driver.py").write_text(DRIVER)
    (work / f"{model}_job.json").write_text(json.dumps(job, indent=2))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.time()
    subprocess.run([str(python), str(work / "driver.py"), str(work / f"{model}_job.json")], check=True, env=env,
                   cwd=work)
    result = json.loads(Path(job["result"]).read_text())
    return {**result, "wall_seconds": round(time.time() - started, 1)}


def run_ours(model: str, split: Path, work: Path, epochs: int, threads: int, seed: int, max_len: int) -> dict:
    from loopctr.data.prepare import prepare_dataset
    from loopctr.train.trainer import train

    data = work / "data"
    prepare_dataset("amazon-electronics-x1", data, source_dir=split, log=lambda *a: None)
    run = work / f"{model}-len{max_len}-s{seed}"
    if (run / "metrics.json").is_file():
        report = json.loads((run / "metrics.json").read_text())
    else:
        if run.exists():
            import shutil

            shutil.rmtree(run)
        overrides = [*OURS_COMMON, *MODELS[model]["ours"], f"max_len={max_len}", f"epochs={epochs}",
                     f"threads={threads}", f"seed={seed}"]
        report = train(data, run, model, overrides=overrides, log=lambda *a: None)
    return {k: report.get(k) for k in ("auc", "gauc", "logloss", "best_epoch", "epochs_run", "train_samples_per_s",
                                        "eval_samples_per_s")} | {
        "valid_auc": report.get("valid", {}).get("auc"),
        "params_total": report["params_dense"] + report["params_embedding"]}


def table(rows: list[dict]) -> str:
    fmt = lambda v, d=4: "-" if v is None else (f"{v:,.0f}" if d == 0 else f"{v:.{d}f}")  # noqa: E731
    lines = ["| model | implementation | test AUC | test gAUC | test logloss | valid AUC | best/run epochs | params | "
             "train samples/s | eval samples/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['impl']} | {fmt(r.get('auc'))} | {fmt(r.get('gauc'))} | "
                     f"{fmt(r.get('logloss'))} | {fmt(r.get('valid_auc'))} | "
                     f"{r.get('best_epoch', '-')}/{r.get('epochs_run', '-')} | "
                     f"{fmt(r.get('params_total'), 0)} | {fmt(r.get('train_samples_per_s'), 0)} | "
                     f"{fmt(r.get('eval_samples_per_s'), 0)} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="directory with train.csv, valid.csv, test.csv")
    p.add_argument("--out", type=Path, required=True, help="work directory (data, runs, results.json)")
    p.add_argument("--models", default="din,dcnv2", help=f"comma-separated, from {sorted(MODELS)}")
    p.add_argument("--epochs", type=int, default=100, help="epoch budget (early stopping as BARS: patience 2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--max-len", type=int, default=100, help="history length on both sides (BARS: 100)")
    p.add_argument("--rows", type=int, help="keep only the first N rows of every split")
    p.add_argument("--skip-fuxictr", action="store_true", help="run our side only")
    p.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "loopctr-fuxictr-venv")
    args = p.parse_args(argv)
    args.split, args.out = args.split.resolve(), args.out.resolve()  # FuxiCTR's driver runs in another directory
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    for name in ("train.csv", "valid.csv", "test.csv"):
        if not (args.split / name).is_file():
            p.error(f"{args.split / name}: not found (--split needs train.csv, valid.csv and test.csv)")
    args.zoo = None
    if not args.skip_fuxictr:
        zoo = os.environ.get("FUXICTR_MODEL_ZOO")
        if not zoo:
            p.error("set FUXICTR_MODEL_ZOO to the model_zoo directory of a FuxiCTR clone "
                    "(git clone https://github.com/reczoo/FuxiCTR), or pass --skip-fuxictr")
        args.zoo = Path(zoo).expanduser()
        missing = [MODELS[m]["zoo"] for m in args.models if not (args.zoo / MODELS[m]["zoo"] / "src").is_dir()]
        if missing:
            p.error(f"FUXICTR_MODEL_ZOO={args.zoo}: no {missing} model directories with a src/ package")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    split = subset_split(args.split, args.rows, args.out / "split")
    python = None if args.skip_fuxictr else ensure_venv(args.venv)
    rows = []
    for model in args.models:
        if python is not None:
            rows.append({"model": model, "impl": "FuxiCTR 2.3.10",
                         **run_fuxictr(model, python, args.zoo, split, args.out / "fuxictr", args.epochs,
                                       args.threads, args.seed, args.max_len)})
        rows.append({"model": model, "impl": "loopctr",
                     **run_ours(model, split, args.out / "ours", args.epochs, args.threads, args.seed,
                                  args.max_len)})
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
