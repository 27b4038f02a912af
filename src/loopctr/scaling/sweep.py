"""`loopctr scale`: a resumable sweep over a grid of settings, models and seeds, each point an ordinary run
directory (`OUT/runs/<model>-<key=value>...-s<seed>`), then one results row per finished run
(`OUT/results.jsonl`), power-law fits (`OUT/fits.json`) and figures (`OUT/scale-<x>-<y>.png`).

Repeating the command continues the sweep: finished runs are kept, a killed one resumes from its checkpoint,
and with a time budget the sweep stops before starting a run once the budget is spent.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loopctr.atomic import atomic_write_text
from loopctr.errors import UserError

# the scales a quality measure is fitted against: results-row key -> axis label (with units)
SCALES = {"params_dense": "dense parameters", "train_flops": "training FLOPs (whole run)",
          "rows_train_used": "training rows"}
QUALITIES = {"logloss": "test logloss", "1-auc": "1 - test AUC"}
FLOP_BATCH_ROWS = 256  # the same first rows of the training split for every run


@dataclass
class Sweep:
    data: Path
    out: Path
    models: list[str]
    grid: dict[str, list[str]]  # setting -> values, as written on the command line
    seeds: list[int]
    fixed: list[str] = field(default_factory=list)  # key=value settings of every run
    time_budget_s: float | None = None

    def points(self) -> list[dict[str, str]]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def runs(self, points: list[dict[str, str]] | None = None) -> list[tuple[str, dict[str, str], int, Path]]:
        """(model, point, seed, run directory) of every run, over `points` (default: the whole grid)."""
        return [(model, point, seed, self.out / "runs" / run_name(model, point, seed))
                for model in self.models for point in (self.points() if points is None else points)
                for seed in self.seeds]


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """["num_layers=1,2,4", "dnn_hidden_units=[64],[64,32]"] -> {key: [values]} (commas inside brackets stay)."""
    grid = {}
    for spec in specs:
        if "=" not in spec:
            raise UserError(f"--grid {spec}: expected key=v1,v2,...")
        key, raw = spec.split("=", 1)
        values = [v.strip() for v in re.split(r",(?![^\[]*\])", raw) if v.strip()]
        if not values or key in grid:
            raise UserError(f"--grid {spec}: " + ("no values" if not values else f"'{key}' is given twice"))
        grid[key.strip()] = values
    return grid


def run_name(model: str, point: dict[str, str], seed: int) -> str:
    parts = [model, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items()), f"s{seed}"]
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "", "-".join(parts))


def overrides_of(sweep: Sweep, point: dict[str, str], seed: int) -> list[str]:
    return [*sweep.fixed, *(f"{k}={v}" for k, v in point.items()), f"seed={seed}"]


def check_settings(sweep: Sweep) -> None:
    """Validate every run's config before the first one trains (a typo fails now, not hours later)."""
    from loopctr.data.dataset import PreparedDataset
    from loopctr.train.config import build_run_config

    defaults = PreparedDataset(sweep.data).meta.get("defaults", {})
    for model, point, seed, _ in sweep.runs():
        build_run_config(model, None, overrides_of(sweep, point, seed), dataset_defaults=defaults)


def run_sweep(sweep: Sweep, log=print) -> list[dict]:
    """Train every run of the sweep not yet finished (within the time budget); returns the results rows."""
    from loopctr.train.trainer import train

    check_settings(sweep)
    sweep.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    runs = sweep.runs()
    for i, (model, point, seed, run) in enumerate(runs):
        if (run / "metrics.json").is_file():
            continue
        if sweep.time_budget_s is not None and time.monotonic() - start >= sweep.time_budget_s:
            left = sum(not (r / "metrics.json").is_file() for *_, r in runs[i:])
            log(f"time budget spent: {left} run(s) left; the same command continues the sweep")
            break
        log(f"[{i + 1}/{len(runs)}] {run.name}")
        if (run / "config.yaml").is_file():  # a killed run (before its first checkpoint: restarted by train)
            train(None, run, resume=True, log=log)
        else:
            train(sweep.data, run, model, overrides=overrides_of(sweep, point, seed), log=log)
    rows = [result_row(run, model, point, seed) for model, point, seed, run in runs
            if (run / "metrics.json").is_file()]
    atomic_write_text(sweep.out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def result_row(run: Path, model: str, point: dict[str, str], seed: int) -> dict:
    """One finished run: its settings, sizes, counted FLOPs and test metrics."""
    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.loader import BatchLoader
    from loopctr.scaling.flops import flops_per_sample
    from loopctr.train.checkpoint import load_best_model
    from loopctr.train.config import load_run_config

    report = json.loads((run / "metrics.json").read_text())
    config, data_dir = load_run_config(run)
    data = PreparedDataset(data_dir)
    model_obj, _ = load_best_model(run, config, data.schema, data.vocab_sizes, data.fingerprint, data.pretrained_dims)
    batch = next(iter(BatchLoader(data.split("train"), FLOP_BATCH_ROWS, config.data).batches()))
    train_flops = flops_per_sample(model_obj, batch, train=True)
    keep = ("auc", "gauc", "logloss", "ne", "params_dense", "params_embedding", "rows_train_used", "epochs_run",
            "best_epoch", "stopped_by", "train_samples_per_s", "eval_samples_per_s")
    return {"run": run.name, "model": model, "settings": point, "seed": seed,
            **{k: report[k] for k in keep if k in report},
            "train_flops_per_sample": train_flops,
            "infer_flops_per_sample": flops_per_sample(model_obj, batch, train=False),
            # the samples the run trained on (epochs x rows): the compute axis of a scaling law
            "train_flops": train_flops * report["rows_train_used"] * report["epochs_run"]}


def fit_results(rows: list[dict], out: Path, log=print) -> list[dict]:
    """Per model, every quality against every scale that takes >= 3 distinct values: power-law fits (fits.json)
    and a figure per (scale, quality)."""
    from loopctr.plots import scaling_figure
    from loopctr.scaling.powerlaw import fit_over_seeds

    fits = []
    for scale, quality in itertools.product(SCALES, QUALITIES):
        series = []
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            x = np.array([r[scale] for r in mine], dtype=float)
            if np.unique(x).size < 3:
                continue
            y = np.array([r["logloss"] if quality == "logloss" else 1.0 - r["auc"] for r in mine])
            seed = np.array([r["seed"] for r in mine])
            fit = fit_over_seeds(x, seed, y)
            fits.append({"model": model, "scale": scale, "quality": quality, **fit.to_dict()})
            series.append((model, x, y, fit))
        if series:
            path = out / f"scale-{scale}-{quality}.png"
            scaling_figure(series, SCALES[scale], QUALITIES[quality], path)
    atomic_write_text(out / "fits.json", json.dumps(fits, indent=2))
    return fits
