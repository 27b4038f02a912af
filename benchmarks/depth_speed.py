"""Inference speed of a looped model at each depth: samples/s of the forward pass over a split.

Each depth is a separate pass over the same batches (the model computes exactly `depth` passes of its loop
block), best of `--repeats` with the depths interleaved, after a warm-up; batches are assembled once,
beforehand, so only the model is timed. Prints one markdown row per (run, depth), with the ratio to the run's depth-1 speed.

    python benchmarks/depth_speed.py --run RUN [--run RUN2 ...] [--depths 1,2,3] [--split test]
        [--batch-size 1024] [--rows 20000] [--threads 1] [--repeats 3] [--model-set key=value ...]

`--model-set` times another architecture on the run's data (e.g. n_loop_layers=2): the model is rebuilt from
the run's model config with those settings and freshly initialised weights, which is enough for timing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def load_batches(run_dir, split: str, batch_size: int, rows: int, model_set: list[str] = ()):
    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.loader import BatchLoader
    from loopctr.train.checkpoint import load_best_model
    from loopctr.train.config import load_run_config

    run, data_dir = load_run_config(run_dir)
    data = PreparedDataset(data_dir)
    if model_set:
        from loopctr.config import apply_overrides
        from loopctr.models import build_model

        config = apply_overrides(run.model, list(model_set), where="--model-set")
        model = build_model(run.model_name, data.schema, data.vocab_sizes, config, data.pretrained_vectors()).eval()
    else:
        model, _ = load_best_model(run_dir, run, data.schema, data.vocab_sizes, data.fingerprint,
                                   data.pretrained_dims)
    loader = BatchLoader(data.split(split), batch_size, run.data)
    batches, seen = [], 0
    for batch in loader.batches():
        batches.append(batch)
        seen += len(batch["_label"])
        if seen >= rows:
            break
    return model, batches, seen


@torch.inference_mode()  # as the server scores
def samples_per_s(model, batches, seen: int, depths: list[int], repeats: int) -> dict[int, float]:
    """Best-of-`repeats` samples/s at every depth, the depths interleaved within each repeat so that a slow
    spell of a shared machine does not fall on one depth only."""
    for depth in depths:
        model(batches[0], depth=depth)  # warm-up
    best = {depth: float("inf") for depth in depths}
    for _ in range(repeats):
        for depth in depths:
            start = time.perf_counter()
            for batch in batches:
                model(batch, depth=depth)
            best[depth] = min(best[depth], time.perf_counter() - start)
    return {depth: seen / seconds for depth, seconds in best.items()}


def main():
    from loopctr.runtime import keep_freed_memory

    keep_freed_memory()  # as the loopctr command does (LOOPCTR_MALLOC=default: off)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True)
    p.add_argument("--depths", default="1,2,3")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--rows", type=int, default=20000, help="rows of the split to time (from its start)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model-set", nargs="*", default=[], metavar="key=value",
                   help="time this architecture instead (fresh weights), e.g. n_loop_layers=2")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    print(f"| run | depth | samples/s (batch {args.batch_size}, {args.threads} thread(s)) | vs depth {depths[0]} |\n"
          "|---|---|---|---|")
    for run in args.run:
        model, batches, seen = load_batches(run, args.split, args.batch_size, args.rows, args.model_set)
        speeds = samples_per_s(model, batches, seen, depths, args.repeats)
        for depth in depths:
            speed, base = speeds[depth], speeds[depths[0]]
            label = Path(run).name + (f" with {' '.join(args.model_set)}" if args.model_set else "")
            print(f"| {label} | {depth} | {speed:,.0f} | {speed / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
