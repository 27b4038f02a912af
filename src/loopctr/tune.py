"""`loopctr tune`: grid or random search over settings and seeds, selected on the validation split only.

Each point of the search is an ordinary run directory per seed (`OUT/runs/<model>-<key=value>...-s<seed>`, as
`loopctr scale` names them), trained by `loopctr train` in a process of its own; `--jobs N` trains N at a time
with the machine's cores shared out as torch threads, so that concurrent jobs do not oversubscribe them.
Repeating the command continues: finished runs are kept, a killed one resumes. The chosen point is the best mean
validation score (the run's `monitor`) over its seeds; test metrics are shown for it alone, so that nothing is
selected on test.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from loopctr.atomic import atomic_write_text
from loopctr.errors import UserError
from loopctr.runtime import available_cores
from loopctr.scaling.sweep import Sweep, check_settings, overrides_of

LOWER_IS_BETTER = {"logloss", "ne"}


def search_points(sweep: Sweep, samples: int | None, seed: int) -> list[dict[str, str]]:
    """The grid's points, or `samples` of them drawn without replacement (a fixed draw for a fixed seed)."""
    points = sweep.points()
    if samples is None or samples >= len(points):
        return points
    return random.Random(seed).sample(points, samples)


def _train(sweep: Sweep, model: str, point: dict, seed: int, run: Path, threads: int) -> tuple[Path, int, str]:
    if (run / "config.yaml").is_file():
        argv = ["train", "--out", str(run), "--resume"]
    else:
        argv = ["train", "--data", str(sweep.data), "--model", model, "--out", str(run),
                *overrides_of(sweep, point, seed), f"threads={threads}"]
    done = subprocess.run([sys.executable, "-m", "loopctr.cli.main", *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return run, done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


def run_search(sweep: Sweep, points: list[dict], jobs: int, log=print) -> None:
    check_settings(sweep)
    threads = max(1, available_cores() // jobs)
    todo = [run for run in sweep.runs(points) if not (run[3] / "metrics.json").is_file()]
    (sweep.out / "runs").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        futures = []
        for model, point, seed, run in todo:
            futures.append(pool.submit(
                lambda *a: None if over_budget(sweep, start) else _train(sweep, *a), model, point, seed, run, threads))
        for future in futures:
            result = future.result()
            if result is None:
                continue
            run, code, last = result
            log(f"{run.name}: " + ("done" if code == 0 else f"failed ({last})"))
    if over_budget(sweep, start):
        log("time budget spent; the same command continues the search")


def over_budget(sweep: Sweep, start: float) -> bool:
    return sweep.time_budget_s is not None and time.monotonic() - start >= sweep.time_budget_s


def summarize(sweep: Sweep, points: list[dict]) -> dict:
    """Every point's validation score over its finished seeds, the chosen point, and its test metrics."""
    rows = []
    for model in sweep.models:
        for point in points:
            finished = [run for m, _, _, run in sweep.runs([point]) if m == model and (run / "metrics.json").is_file()]
            if finished:
                reports = [json.loads((run / "metrics.json").read_text()) for run in finished]
                rows.append({"model": model, "settings": point, "seeds": len(reports), "reports": reports})
    if not rows:
        raise UserError(f"{sweep.out}: no finished run to choose from")
    monitor = monitor_of(sweep.out / "runs")
    sign = 1.0 if monitor in LOWER_IS_BETTER else -1.0
    for row in rows:
        values = [r["valid"][monitor] for r in row["reports"]]
        row[f"valid_{monitor}"] = float(np.mean(values))
        row["valid_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    chosen = min(rows, key=lambda r: sign * r[f"valid_{monitor}"])
    test = {k: float(np.mean([r[k] for r in chosen["reports"]])) for k in ("auc", "gauc", "logloss")
            if k in chosen["reports"][0]}
    strip = lambda row: {k: v for k, v in row.items() if k != "reports"}  # noqa: E731
    return {"monitor": monitor, "points": [strip(r) for r in rows], "chosen": strip(chosen), "chosen_test": test}


def monitor_of(runs_dir: Path) -> str:
    """The validation metric the runs select on (train.monitor; "auc+gauc" is read as auc)."""
    import yaml

    config = yaml.safe_load(next(runs_dir.glob("*/config.yaml")).read_text())
    monitor = config["train"]["monitor"]
    return "auc" if "+" in monitor else monitor


def tune(sweep: Sweep, samples: int | None, search_seed: int, jobs: int, log=print) -> dict:
    if jobs < 1:
        raise UserError("--jobs must be >= 1")
    points = search_points(sweep, samples, search_seed)
    sweep.out.mkdir(parents=True, exist_ok=True)
    run_search(sweep, points, jobs, log)
    summary = summarize(sweep, points)
    atomic_write_text(sweep.out / "tune.json", json.dumps(summary, indent=2))
    return summary
