"""How close models run to the machine: counted FLOPs per sample, samples/s and the share of a matmul peak.

    python benchmarks/flop_utilisation.py --data DIR [--models din,dcnv2,loopctr] [--batch-size 1024]
        [--batches 8] [--threads 1] [--repeats 3] [--max-len 50] [MODEL:key=value ...]

For each model (fresh weights at its defaults, plus `MODEL:key=value` settings), on the first `--batches` training
batches of the prepared dataset:
- FLOPs per sample from `torch.utils.flop_counter.FlopCounterMode` on those real batches (matmuls and attention;
  lookups and elementwise work are not counted), training (forward, loss, backward) and inference (forward);
  "executed" at the model's settings, which work on real events and pad only within groups of rows of similar
  length, and "padded" with those groups off (`attention_groups=1` or `length_chunks=1`: every row padded to the
  batch's longest), where the model has such a setting;
- samples/s of a training step (forward, backward, Adam) and of inference, best of `--repeats` passes;
- the peak: the best GFLOP/s of float32 square matmuls (256 to 2048) on the same threads, measured in the same
  run; utilisation = executed FLOPs/sample x samples/s / peak.
Run it on a quiet machine: the numbers are rates.
"""

from __future__ import annotations

import argparse
import time

import torch


def matmul_peak(repeats: int) -> float:
    """Best float32 matmul FLOP/s over a few square sizes."""
    best = 0.0
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(3):
                a @ b
            best = max(best, 3 * 2 * n ** 3 / (time.perf_counter() - start))
    return best


def padded_settings(config) -> list[str]:
    if hasattr(config, "attention_groups"):
        return ["attention_groups=1"]
    if hasattr(config, "length_chunks"):
        return ["length_chunks=1"]
    return []


def best_rate(fn, batches, repeats: int) -> float:
    fn(batches[0])  # warm-up
    rows = sum(b.size for b in batches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        best = min(best, time.perf_counter() - start)
    return rows / best


def main(argv=None) -> int:
    from loopctr.config import apply_overrides
    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.loader import BatchLoader, LoaderConfig
    from loopctr.models import build_model
    from loopctr.scaling.flops import flops_per_sample
    from loopctr.train.config import build_run_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", default="din,dcnv2,loopctr")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("settings", nargs="*", metavar="MODEL:key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = PreparedDataset(args.data)
    loader = BatchLoader(data.split("train"), args.batch_size, LoaderConfig(max_len=args.max_len, prefetch=0))
    batches = []
    for batch in loader.batches():
        batches.append(batch)
        if len(batches) == args.batches:
            break
    peak = matmul_peak(args.repeats)
    print(f"{data.path.name}: {sum(b.size for b in batches):,} training rows in {len(batches)} batches of "
          f"{args.batch_size}, {args.threads} thread(s); float32 matmul peak {peak / 1e9:.1f} GFLOP/s\n")
    print("| model | train MFLOP/sample executed | padded | infer MFLOP/sample executed | padded | train samples/s "
          "| train utilisation | infer samples/s | infer utilisation |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        own = [s.split(":", 1)[1] for s in args.settings if s.split(":", 1)[0] == name]

        def build(extra):
            config = apply_overrides(build_run_config(name, dataset_defaults=data.meta.get("defaults")).model,
                                     own + extra, where=name)
            torch.manual_seed(0)
            return build_model(name, data.schema, data.vocab_sizes, config, data.pretrained_vectors())

        model = build([])
        pad = padded_settings(model.config)
        padded = build(pad) if pad else None
        counted = {}
        for key, m in (("executed", model), ("padded", padded)):
            for train in (True, False):
                counted[key, train] = (sum(flops_per_sample(m, b, train) for b in batches[:3]) / 3
                                       if m is not None else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train_step(batch):
            model.train()
            loss, _ = model.loss(model(batch), batch.label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def infer(batch):
            model.eval()
            with torch.no_grad():
                model(batch)

        train_rate, infer_rate = best_rate(train_step, batches, args.repeats), best_rate(infer, batches, args.repeats)
        mflop = lambda v: f"{v / 1e6:.2f}" if v is not None else "-"  # noqa: E731
        print(f"| {name} | {mflop(counted['executed', True])} | {mflop(counted['padded', True])} | "
              f"{mflop(counted['executed', False])} | {mflop(counted['padded', False])} | {train_rate:,.0f} | "
              f"{counted['executed', True] * train_rate / peak:.1%} | {infer_rate:,.0f} | "
              f"{counted['executed', False] * infer_rate / peak:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
