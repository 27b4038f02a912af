"""Inference speed of a looped model at each depth: samples/s of the forward pass over a split.

Each depth is a separate pass over the same batches (the model computes exactly `depth` passes of its loop
block; a model without loop depths, such as SUAN, is one forward), best of `--repeats` with the depths interleaved, after a warm-up; batches are assembled once,
beforehand, so only the model is timed. Prints one markdown row per (run, depth), with the ratio to the run's depth-1 speed.

    python benchmarks/depth_speed.py --run RUN [--run RUN2 ...] [--depths 1,2,3] [--split test]
        [--batch-size 1024] [--rows 20000] [--threads 1] [--repeats 3] [--model-set key=value ...]
        [--baseline din --baseline dnn ...]

`--model-set` times another architecture on the run's data (e.g. n_loop_layers=2): the model is rebuilt from
the run's model config with those settings and freshly initialised weights, which is enough for timing.
`--baseline NAME` times that model at its library defaults (fresh weights) on the first run's batches, in the
same rounds as the depths, so the looped model's speed at each depth has a reference measured beside it.
`--adaptive` also times adaptive depth at the run's calibrated exit threshold (`loopctr evaluate --depths
adaptive` first), rows leaving the batch as they stop, in the same rounds; its row reports the mean passes and
the speed that those mean passes predict from the fixed depths (a least-squares line of seconds over depth).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def load_batches(run_dir, split: str, batch_size: int, rows: int, model_set: list[str] = (),
                 baselines: list[str] = ()):
    """The run's model (rebuilt with `model_set` if given), its first `rows` rows of `split` as batches, and
    `baselines` built at their defaults on the same data: (model, batches, rows seen, {name: baseline})."""
    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.loader import BatchLoader
    from loopctr.models import build_model
    from loopctr.train.checkpoint import load_best_model
    from loopctr.train.config import build_run_config, load_run_config

    run, data_dir = load_run_config(run_dir)
    data = PreparedDataset(data_dir)

    def fresh(name, config):
        return build_model(name, data.schema, data.vocab_sizes, config, data.pretrained_vectors()).eval()

    if model_set:
        from loopctr.config import apply_overrides

        model = fresh(run.model_name, apply_overrides(run.model, list(model_set), where="--model-set"))
    else:
        model, _ = load_best_model(run_dir, run, data.schema, data.vocab_sizes, data.fingerprint,
                                   data.pretrained_dims)
    loader = BatchLoader(data.split(split), batch_size, run.data)
    batches, seen = [], 0
    for batch in loader.batches():
        batches.append(batch)
        seen += batch.size
        if seen >= rows:
            break
    return model, batches, seen, {name: fresh(name, build_run_config(name).model) for name in baselines}


def best_of(cases: dict, repeats: int) -> dict:
    """Best seconds of each zero-argument case, the cases interleaved within every round (after one warm-up call
    each) so that a slow spell of a shared machine does not fall on one of them only."""
    for run in cases.values():
        run()
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def adaptive_forward(model, run_dir):
    """(forward, mean passes of the last call) at the run's calibrated exit threshold."""
    from loopctr.train.evaluate import load_exit_head

    head, saved = load_exit_head(run_dir)
    if head is None:
        raise SystemExit(f"{run_dir}: no exit head; run `loopctr evaluate --run {run_dir} --depths adaptive` first")
    passes = []

    def forward(batch):
        _, depths = model.forward_adaptive(batch, head.decider(saved["threshold"]), model.trained_depths())
        passes.append(depths)

    return forward, lambda: float(torch.cat(passes).float().mean())


def predicted_speed(speeds: dict, depths: list[int], mean_passes: float, seen: int) -> float:
    """Samples/s that `mean_passes` predicts from the fixed depths' speeds (seconds linear in the depth)."""
    seconds = [seen / speeds[d] for d in depths]
    slope, intercept = np.polyfit(depths, seconds, 1)
    return seen / (intercept + slope * mean_passes)


@torch.inference_mode()  # as the server scores
def samples_per_s(model, batches, seen: int, depths: list[int], repeats: int,
                  baselines: dict | None = None) -> dict:
    """Best-of-`repeats` samples/s over the batches at every depth (keys: the depths) and of every other forward
    in `baselines` (keys: their names), all interleaved (`best_of`). A model without depths has one forward,
    under the key of the first depth."""
    if model.trained_depths() is None:
        forwards = {depths[0]: model}
    else:
        forwards = {depth: lambda b, d=depth: model(b, depths=[d]) for depth in depths}
    forwards.update(baselines or {})

    def over_batches(forward):
        def run():
            for batch in batches:
                forward(batch)
        return run

    best = best_of({key: over_batches(forward) for key, forward in forwards.items()}, repeats)
    return {key: seen / seconds for key, seconds in best.items()}


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
    p.add_argument("--baseline", action="append", default=[], metavar="NAME",
                   help="also time this model (library defaults, fresh weights) on the first run's batches")
    p.add_argument("--adaptive", action="store_true", help="also time adaptive depth at the calibrated threshold")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    print(f"| run | depth | samples/s (batch {args.batch_size}, {args.threads} thread(s)) | vs depth {depths[0]} |\n"
          "|---|---|---|---|")
    for i, run in enumerate(args.run):
        model, batches, seen, baselines = load_batches(run, args.split, args.batch_size, args.rows,
                                                       args.model_set, [] if i else args.baseline)
        others = dict(baselines)
        if args.adaptive:
            others["adaptive"], mean_passes = adaptive_forward(model, run)
        looped = model.trained_depths() is not None
        speeds = samples_per_s(model, batches, seen, depths, args.repeats, others)
        base = speeds[depths[0]]
        label = Path(run).name + (f" with {' '.join(args.model_set)}" if args.model_set else "")
        for depth in depths if looped else depths[:1]:
            print(f"| {label} | {depth if looped else '-'} | {speeds[depth]:,.0f} | {speeds[depth] / base:.2f}x |",
                  flush=True)
        if args.adaptive:
            m = mean_passes()
            predicted = predicted_speed(speeds, depths, m, seen)
            print(f"| {label} | adaptive, {m:.3f} mean passes | {speeds['adaptive']:,.0f} (predicted from the depths: "
                  f"{predicted:,.0f}, measured {speeds['adaptive'] / predicted:.2f}x) | "
                  f"{speeds['adaptive'] / base:.2f}x |", flush=True)
        for name in baselines:
            print(f"| {name} (defaults) | - | {speeds[name]:,.0f} | {speeds[name] / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
