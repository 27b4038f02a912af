"""Metric speed: exact AUC and gAUC on random data (1M rows, 100k groups by default).

    python benchmarks/bench_metrics.py [--rows 1000000] [--groups 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from loopctr import metrics as M


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--groups", type=int, default=100_000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, args.rows)
    p_hat = rng.random(args.rows).astype(np.float32)
    g = rng.integers(0, args.groups, args.rows)
    for name, fn in (("auc", lambda: M.auc(y, p_hat)), ("gauc", lambda: M.gauc(y, p_hat, g)),
                     ("logloss", lambda: M.logloss(y, p_hat)), ("ne", lambda: M.normalized_entropy(y, p_hat))):
        best = min(_timed(fn) for _ in range(3))
        print(f"| {name} | {args.rows:,} rows{f', {args.groups:,} groups' if name == 'gauc' else ''} | {best:.3f} s |")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
