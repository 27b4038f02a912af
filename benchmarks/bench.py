"""Benchmark any list of models on a prepared dataset, with a fixed budget and seeds.

    python benchmarks/bench.py --models dnn,din,dcnv2 --data DIR --seeds 1,2,3 --out DIR [--epochs N] [key=value ...]
    python benchmarks/bench.py --models "loopctr(1/1)=loopctr,loopctr(1/3)=loopctr" ... \
        "loopctr(1/1):train_loops=1" "loopctr(1/3):train_loops=3"   # named variants of one model
    python benchmarks/bench.py --results DIR/results.jsonl            # print the leaderboard only

Each (model, seed) trains into OUT/<dataset>/<model>-s<seed> (a finished run is not trained again; an
interrupted one is resumed from its last checkpoint) and appends one JSON row to the results file (default
OUT/results.jsonl).
The leaderboard is a markdown table per dataset: mean ± std of test AUC over seeds, gAUC, logloss, dense and
embedding parameters, training and evaluation samples/s, sorted by mean test AUC. `key=value` settings go to
every run (e.g. threads=1 max_len=100; without threads=N a run takes the cores free when it starts), `MODEL:key=value` settings to that model's runs only (e.g.
dcnv2:num_cross_layers=3); `--epochs` is the budget (early stopping may end a run sooner). A model entry
`LABEL=MODEL` is a named variant: it trains MODEL, is reported (and takes `LABEL:key=value` settings) as LABEL,
so several settings of one model share a leaderboard.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

COLUMNS = ("auc", "gauc", "logloss", "ne", "params_dense", "params_embedding", "train_samples_per_s",
           "eval_samples_per_s", "best_epoch", "epochs_run", "stopped_by", "train_seconds")


def dataset_label(data: Path) -> str:
    meta = json.loads((Path(data) / "schema.json").read_text())
    name = meta.get("schema", {}).get("name") or meta.get("name") or "data"
    return f"{name}:{Path(data).resolve().name}"


def run_bench(models: list[str], data, seeds: list[int], out, overrides: list[str] = (), epochs: int | None = None,
              results=None, log=print) -> list[dict]:
    """Train every (model, seed), append a row per newly finished run to `results`; return all rows of this call."""
    from loopctr.runtime import free_cores
    from loopctr.train.trainer import train

    data, out = Path(data), Path(out)
    results = Path(results) if results else out / "results.jsonl"
    label = dataset_label(data)
    budget = [f"epochs={epochs}"] if epochs else []
    rows = []
    variants = [parse_variant(m) for m in models]
    labels = [name for name, _ in variants]
    for model, architecture in variants:
        for seed in seeds:
            run_dir = out / label.split(":")[-1] / f"{run_name(model)}-s{seed}"
            if (run_dir / "metrics.json").is_file():
                log(f"{run_dir}: finished earlier; not trained again")
                continue
            settings = [*model_settings(overrides, model, labels), *budget, f"seed={seed}"]
            if not any(s.split("=")[0] in ("threads", "train.threads") for s in settings):
                settings.append(f"threads={free_cores()}")  # the cores free now, not one thread per core
            started = time.time()
            if (run_dir / "checkpoint.pt").is_file():  # interrupted after an epoch: continue it, as it was set up
                log(f"== {model} seed {seed} on {label}: resuming {run_dir}")
                report = train(data, run_dir, architecture, resume=True, log=log)
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # interrupted before its first checkpoint: start it over
                log(f"== {model} seed {seed} on {label}: {' '.join(settings)}")
                report = train(data, run_dir, architecture, overrides=settings, log=log)
            row = {"dataset": label, "model": model, "architecture": architecture, "seed": seed, "settings": settings,
                   **{k: report.get(k) for k in COLUMNS}, "valid_auc": report.get("valid", {}).get("auc"),
                   "run_dir": str(run_dir), "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
                   "wall_seconds": round(time.time() - started, 1), "host": platform.node(),
                   "python": platform.python_version()}
            results.parent.mkdir(parents=True, exist_ok=True)
            with open(results, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def parse_variant(entry: str) -> tuple[str, str]:
    """"LABEL=MODEL" -> (LABEL, MODEL); a plain "MODEL" is its own label."""
    label, _, architecture = entry.partition("=")
    return (label, architecture) if architecture else (label, label)


def run_name(label: str) -> str:
    """A directory name for a label such as "loopctr(1/3)": "loopctr-1-3"."""
    return "-".join(p for p in "".join(c if c.isalnum() or c in "._-" else " " for c in label).split())


def model_settings(overrides, model: str, models: list[str]) -> list[str]:
    """The overrides for one model: plain `key=value` ones, and `MODEL:key=value` ones naming this model."""
    out = []
    for o in overrides:
        prefix, _, rest = o.partition(":")
        if rest and "=" in rest and "=" not in prefix:
            if prefix not in models:
                from loopctr.errors import UserError

                raise UserError(f"override '{o}' names model '{prefix}', which is not in --models {models}")
            if prefix == model:
                out.append(rest)
        else:
            out.append(o)
    return out


def load_results(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def leaderboard(rows: list[dict]) -> str:
    """Markdown tables, one per dataset: mean ± std over seeds (the last row per (model, seed) counts)."""
    latest: dict = {}
    for r in rows:
        latest[(r["dataset"], r["model"], r["seed"])] = r
    groups = defaultdict(list)
    for (dataset, model, _), r in latest.items():
        groups[(dataset, model)].append(r)
    out = []
    for dataset in sorted({d for d, _ in groups}):
        out += [f"### {dataset}", "",
                "| model | seeds | test AUC | gAUC | logloss | dense params | embedding params | train samples/s "
                "| eval samples/s |", "|---|---|---|---|---|---|---|---|---|"]
        entries = [(m, rs) for (d, m), rs in groups.items() if d == dataset]
        entries.sort(key=lambda e: -np.mean([r["auc"] for r in e[1]]))
        for model, rs in entries:
            def stat(key, digits=4):
                v = np.array([r[key] for r in rs if r.get(key) is not None], dtype=float)
                if v.size == 0:
                    return "-"
                spread = f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else ""
                return f"{v.mean():.{digits}f}{spread}"
            speed = lambda k: f"{np.mean([r[k] for r in rs]):,.0f}"  # noqa: E731
            out.append(f"| {model} | {len(rs)} | {stat('auc')} | {stat('gauc')} | {stat('logloss')} | "
                       f"{rs[0]['params_dense']:,} | {rs[0]['params_embedding']:,} | {speed('train_samples_per_s')} | "
                       f"{speed('eval_samples_per_s')} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    from loopctr.runtime import keep_freed_memory

    keep_freed_memory()  # as the loopctr command does (LOOPCTR_MALLOC=default: off)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="comma-separated model names")
    p.add_argument("--data", help="prepared dataset directory (loopctr prepare)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--out", help="directory for the runs (and results.jsonl)")
    p.add_argument("--epochs", type=int, help="epoch budget of every run (default: the train config's)")
    p.add_argument("--results", help="results file to append to / read (default OUT/results.jsonl)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    from loopctr.errors import UserError

    try:
        if args.models:
            if not (args.data and args.out):
                p.error("--models needs --data and --out")
            run_bench([m.strip() for m in args.models.split(",") if m.strip()], args.data,
                      [int(s) for s in args.seeds.split(",")], args.out, args.overrides, args.epochs, args.results)
        results = args.results or (Path(args.out) / "results.jsonl" if args.out else None)
        if results is None:
            p.error("nothing to do: give --models (to run) or --results (to print)")
        print(leaderboard(load_results(results)))
    except UserError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
