"""Core speed benchmark: prepare rows/s, then train and eval samples/s of DNN, DIN, LoopCTR and the baselines
on the Amazon Beauty reference split (BARS AmazonElectronics_x1 settings), with DIN's plain padded attention
(FuxiCTR's compute) measured side by side with the packed one, and LoopCTR trained with 1 or 3 loop passes
and evaluated at depth 1 or 3.

    python benchmarks/bench_core.py [--split DIR] [--steps 60] [--threads 2] [--only LoopCTR]

Speeds are measured in one process, one after another, so their ratios are comparable; absolute numbers
depend on the machine and its load (printed with the results).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from loopctr.data.dataset import PreparedDataset
from loopctr.data.loader import BatchLoader
from loopctr.data.prepare import prepare_dataset
from loopctr.models import build_model
from loopctr.train.config import build_run_config
from loopctr.train.trainer import build_optimizer

DEFAULT_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark_splits" / "amazon_beauty"


def time_prepare(split: Path, repeats: int = 3) -> tuple[float, int, Path]:
    best, rows, keep = float("inf"), 0, Path(tempfile.mkdtemp(prefix="loopctr-bench-"))
    for i in range(repeats):
        out = keep / f"prepared{i}"
        start = time.perf_counter()
        meta = prepare_dataset("amazon-electronics-x1", out, source_dir=split, log=lambda *a: None)
        best = min(best, time.perf_counter() - start)
        rows = sum(s["rows"] for s in meta["splits"].values())
        if i:
            shutil.rmtree(out)
    return rows / best, rows, keep / "prepared0"


def padded_din_attention(model):
    """DIN with its target attention computed by the padded reference (`layers/reference.py`), as FuxiCTR does."""
    from loopctr.layers.reference import din_attention_reference

    att = model.attention
    att.forward = lambda target, events, history: din_attention_reference(att, target, history.to_dense(events),
                                                                          history.mask())
    return model


def time_model(data: PreparedDataset, model_name: str, overrides: list[str], steps: int,
               patch=None) -> tuple[float, float]:
    run = build_run_config(model_name, overrides=overrides)
    torch.manual_seed(0)
    model = build_model(model_name, data.schema, data.vocab_sizes, run.model, data.pretrained_vectors())
    if patch is not None:
        model = patch(model)
    opt = build_optimizer(model, run.train)
    loader = BatchLoader(data.split("train"), run.train.batch_size, run.data, shuffle=True, seed=0)
    batches = loader.batches()
    model.train()
    for _ in range(5):  # warm-up
        b = next(batches)
        loss, _ = model.loss(model(b), b.label)
        opt.zero_grad(); loss.backward(); opt.step()  # noqa: E702
    seen, start = 0, time.perf_counter()
    for _ in range(steps):
        b = next(batches)
        loss, _ = model.loss(model(b), b.label)
        opt.zero_grad(); loss.backward(); opt.step()  # noqa: E702
        seen += b.size
    train_speed = seen / (time.perf_counter() - start)
    batches.close()  # stops the prefetch thread
    model.eval()
    evaluation = BatchLoader(data.split("test"), run.train.eval_batch_size, run.data)
    seen, start = 0, time.perf_counter()
    with torch.no_grad():
        for b in evaluation.batches():
            model(b)
            seen += b.size
    return train_speed, seen / (time.perf_counter() - start)


def main():
    from loopctr.runtime import keep_freed_memory

    keep_freed_memory()  # as the loopctr command does (LOOPCTR_MALLOC=default: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="run only the cases whose label contains one of these "
                                                    "comma-separated texts")
    args = parser.parse_args()
    if not args.split.is_dir():
        raise SystemExit(f"{args.split}: not found (the Amazon Beauty reference split, ../shared/data)")
    torch.set_num_threads(args.threads)
    rows_per_s, rows, prepared = time_prepare(args.split)
    data = PreparedDataset(prepared)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"\nprepare: {rows:,} rows (train+valid+test) at {rows_per_s:,.0f} rows/s (best of 3)\n")
    cases = [
        ("DNN", "dnn", ["max_len=100"]),
        ("DIN max_len 50", "din", ["max_len=50"]),
        ("DIN max_len 50, padded reference attention", "din", ["max_len=50"], padded_din_attention),
        ("DIN max_len 100", "din", ["max_len=100"]),
        ("DIN max_len 100, padded reference attention", "din", ["max_len=100"], padded_din_attention),
        ("LoopCTR(1/1) max_len 50", "loopctr", ["max_len=50", "train_loops=1", "infer_loops=1"]),
        ("LoopCTR(1/3) max_len 50", "loopctr", ["max_len=50", "train_loops=3", "infer_loops=1"]),
        ("LoopCTR(3/3) max_len 50", "loopctr", ["max_len=50", "train_loops=3", "infer_loops=3"]),
        ("LoopCTR(1/3) max_len 50, one attention grid", "loopctr",
         ["max_len=50", "train_loops=3", "infer_loops=1", "attention_groups=1"]),
        ("LoopCTR(1/3) 2-layer loop block max_len 50", "loopctr",
         ["max_len=50", "train_loops=3", "infer_loops=1", "n_loop_layers=2", "n_experts=4"]),
        ("LoopCTR(3/3) 2-layer loop block max_len 50", "loopctr",
         ["max_len=50", "train_loops=3", "infer_loops=3", "n_loop_layers=2", "n_experts=4"]),
        *((f"{name} max_len 50", name, ["max_len=50"])  # the baselines, default settings, as in the leaderboard
          for name in ("dnn", "dcnv2", "dlrm", "wukong", "fat", "bst", "onetrans", "hstu", "mtgr", "suan")),
    ]
    cases = [c for c in cases if any(text in c[0] for text in args.only.split(","))]
    print("| model | train samples/s | eval samples/s |\n|---|---|---|")
    for label, name, overrides, *patch in cases:
        train_speed, eval_speed = time_model(data, name, overrides, args.steps, *patch)
        print(f"| {label} | {train_speed:,.0f} | {eval_speed:,.0f} |", flush=True)
    shutil.rmtree(prepared.parent)


if __name__ == "__main__":
    main()
