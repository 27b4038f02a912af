"""`loopctr demo`: generate the built-in dataset, train every demo model on it, print a results table.

Everything is written under the output directory: the prepared data in `<out>/data`, one run per model in
`<out>/<model>`, the table in `<out>/results.md`.
"""

from __future__ import annotations

import json
from pathlib import Path

from loopctr.data.prepare import prepare_dataset
from loopctr.models import MODELS
from loopctr.runtime import free_cores
from loopctr.train.trainer import train

# Sized to finish in minutes on 2 CPU cores. Batch 256: the BatchNorm statistics in Dice (momentum 0.01, as
# FuxiCTR) need enough steps on a small set.
DEMO_DATA = ["users=1500"]
DEMO_TRAIN = ["batch_size=256", "epochs=4", "early_stop_patience=1"]
QUICK_DATA = ["users=400", "items=800", "categories=12", "max_events=12"]
QUICK_TRAIN = ["batch_size=256", "epochs=2"]


def demo_models() -> list[str]:
    """The pooled baseline, the sequence baseline, and LoopCTR when it is available."""
    return [m for m in ("dnn", "din", "loopctr") if m in MODELS]


def run_demo(out, quick: bool = False, log=print) -> list[dict]:
    out = Path(out)
    data = out / "data"
    prepare_dataset("synthetic", data, synthetic_overrides=QUICK_DATA if quick else DEMO_DATA, log=log)
    rows = []
    for model in demo_models():
        run_dir = out / model
        done = run_dir / "metrics.json"
        if done.is_file():
            log(f"{run_dir}: already trained; reusing its metrics")
            report = json.loads(done.read_text())
        else:
            threads = free_cores()  # not torch's one per core: other jobs may share the machine
            log(f"{model}: training with {threads} thread(s), the cores free now")
            report = train(data, run_dir, model, overrides=[*(QUICK_TRAIN if quick else DEMO_TRAIN), f"threads={threads}"],
                           resume=(run_dir / "checkpoint.pt").is_file(), log=log)
        rows.append(report)
    table = results_table(rows)
    (out / "results.md").write_text(table + "\n")
    log("\n" + table)
    return rows


def results_table(rows: list[dict]) -> str:
    lines = ["| model | test AUC | gAUC | logloss | NE | dense params | train samples/s | eval samples/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['auc']:.4f} | {r['gauc']:.4f} | {r['logloss']:.4f} | {r['ne']:.4f} | "
                     f"{r['params_dense']:,} | {r['train_samples_per_s']:,.0f} | {r['eval_samples_per_s']:,.0f} |")
    return "\n".join(lines)
