"""Encoding cost of serving requests: raw rows -> model batch, through pyarrow (`Predictor.encode`, the path
`loopctr prepare` uses) and in plain Python (`Predictor.encode_small`, what the server uses for requests of up
to `Predictor.SMALL_ROWS` rows). Rows are validated beforehand; best of `--repeats` over the same requests.

    python benchmarks/encode_speed.py --run RUN --csv path/test.csv [--rows 1,2,8] [--requests 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import time


def main():
    from loopctr.serve.predictor import Predictor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--rows", default="1,2,8", help="rows per request")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    predictor = Predictor(args.run)
    names = [f.name for f in predictor.schema.fields]
    sizes = [int(n) for n in args.rows.split(",")]
    with open(args.csv, newline="") as fh:
        rows = [{k: r[k] for k in names} for _, r in zip(range(args.requests * max(sizes)), csv.DictReader(fh))]
    print("| rows per request | pyarrow path ms | plain-Python path ms |\n|---|---|---|")
    for n in sizes:
        requests = [predictor.validate(rows[i:i + n]) for i in range(0, n * args.requests, n)]
        best = {}
        for _ in range(args.repeats):
            for name, encode in (("pyarrow", predictor.encode), ("python", predictor.encode_small)):
                start = time.perf_counter()
                for columns in requests:
                    encode(columns)
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / len(requests))
        print(f"| {n} | {1000 * best['pyarrow']:.3f} | {1000 * best['python']:.3f} |")


if __name__ == "__main__":
    main()
