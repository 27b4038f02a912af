"""Load benchmark of `loopctr serve`: throughput and p50/p99 latency by request batch size.

The server runs in its own process on 127.0.0.1; this process is the client, with a bounded number of
requests and a time cap per case. Each client thread keeps one HTTP/1.1 connection open (as a production
client would). Rows are the raw rows of a split's CSV (e.g. the Amazon Beauty test split). Besides throughput
and latency, each row reports what the server's /metrics say about the same window: rows per forward pass (how
much micro-batching merged requests), milliseconds per forward pass (encoding + model) and the model's share of
the wall time; the rest is HTTP, JSON, validation and hand-over. The last column is the throughput of the first
depth over this one, per round (the depths run side by side): the median over rounds, and their range. `--pin`
puts the server on the first CPU and the client on the others, so that on a small machine they do not take
turns on one core.

    python benchmarks/serve_load.py --run RUN [--run RUN2 ...] --csv path/test.csv [--depths 1,3]
        [--batch-sizes 1,32,512] [--concurrency 4] [--requests 200] [--seconds 20] [--max-wait-ms 0] [--server-threads 1]
        [--chunk-rows N]
        [--repeats 3] [--pin]
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def start_server(run: str, max_wait_ms: float, threads: int, cpus: set[int] | None = None,
                 chunk_rows: int | None = None) -> tuple[subprocess.Popen, str]:
    """`loopctr serve` on a free port (on the CPUs `cpus` only, if given); (process, host:port)."""
    proc = subprocess.Popen([sys.executable, "-m", "loopctr.cli.main", "serve", "--run", run, "--port", "0",
                             "--max-wait-ms", str(max_wait_ms), "--threads", str(threads)]
                            + ([] if chunk_rows is None else ["--chunk-rows", str(chunk_rows)]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line}{proc.stdout.read()}")
    return proc, line.split("http://")[1].split()[0]


def post(conn: http.client.HTTPConnection, body: bytes) -> float:
    start = time.perf_counter()
    conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(resp.status)
    return time.perf_counter() - start


def connect(address: str) -> http.client.HTTPConnection:
    host, port = address.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def health_round_trip_ms(address: str, n: int = 200) -> float:
    """p50 of GET /health on one kept-alive connection: the HTTP cost of a request without any scoring."""
    conn = connect(address)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        times.append(time.perf_counter() - start)
    conn.close()
    return 1000 * float(np.percentile(times, 50))


def forward_totals(address: str) -> tuple[float, float, float]:
    """(forward passes, rows, seconds) the server has scored so far, from its /metrics."""
    text = urllib.request.urlopen(f"http://{address}/metrics").read().decode()
    value = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    return value["loopctr_batch_rows_count"], value["loopctr_batch_rows_sum"], value["loopctr_batch_seconds_sum"]


def load(address: str, rows: list[dict], batch: int, depth, concurrency: int, requests: int, seconds: float) -> dict:
    bodies = []
    for i in range(16):
        chunk = [rows[(i * batch + j) % len(rows)] for j in range(batch)]
        bodies.append(json.dumps({"rows": chunk, **({"depth": depth} if depth else {})}).encode())
    post(connect(address), bodies[0])  # warm-up
    latencies, lock, stop_at = [], threading.Lock(), time.perf_counter() + seconds
    counter = iter(range(requests))

    def worker():
        conn = connect(address)
        for i in counter:
            if time.perf_counter() > stop_at:
                break
            t = post(conn, bodies[i % len(bodies)])
            with lock:
                latencies.append(t)
        conn.close()

    before = forward_totals(address)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - start
    passes, rows_scored, seconds = (b - a for a, b in zip(before, forward_totals(address)))
    lat = np.array(latencies)
    return {"requests": len(lat), "rows_per_s": len(lat) * batch / wall, "p50_ms": 1000 * np.percentile(lat, 50),
            "p99_ms": 1000 * np.percentile(lat, 99), "rows_per_pass": rows_scored / passes,
            "ms_per_pass": 1000 * seconds / passes, "model_share": seconds / wall}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True)
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--depths", default="", help="comma-separated depths for LoopCTR runs (empty: the default)")
    p.add_argument("--batch-sizes", default="1,32,512")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="the server's micro-batching wait")
    p.add_argument("--chunk-rows", type=int, help="the server's length-sorted chunk size (default: the server's)")
    p.add_argument("--server-threads", type=int, default=0, help="the server's torch threads (0: torch's default)")
    p.add_argument("--pin", action="store_true",
                   help="the server on the first CPU, this client on the others (so that they do not take turns)")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds per batch size, depths side by side in each; the median round is shown")
    args = p.parse_args()
    server_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least two CPUs")
        server_cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))
    with open(args.csv, newline="") as fh:
        rows = [r for _, r in zip(range(5000), csv.DictReader(fh))]
    print("| run | depth | batch | requests | rows/s | p50 ms | p99 ms | rows per forward | ms per forward | "
          "model share | first depth / this |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for run in args.run:
        proc, address = start_server(run, args.max_wait_ms, args.server_threads, server_cpus, args.chunk_rows)
        try:
            meta = json.loads(urllib.request.urlopen(f"http://{address}/metadata").read())
            print(f"| {meta['model']} ({Path(run).name}) | GET /health, 1 connection | - | 200 | - | "
                  f"{health_round_trip_ms(address):.2f} | - | - | - | - | - |", flush=True)
            depths = [int(d) for d in args.depths.split(",") if d] if meta["depths"] else [None]
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                rounds = [{depth: load(address, rows, batch, depth, args.concurrency, args.requests, args.seconds)
                           for depth in depths} for _ in range(args.repeats)]
                for depth in depths:
                    r = sorted((rnd[depth] for rnd in rounds), key=lambda x: x["rows_per_s"])[len(rounds) // 2]
                    # the throughput ratio to the first depth within each round (measured side by side): median
                    # (and the range over rounds)
                    ratios = [rnd[depths[0]]["rows_per_s"] / rnd[depth]["rows_per_s"] for rnd in rounds]
                    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
                    ratio = f"{np.median(ratios):.2f}x{spread}"
                    print(f"| {meta['model']} ({Path(run).name}) | {depth or '-'} | {batch} | {r['requests']} | "
                          f"{r['rows_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rows_per_pass']:.1f} | "
                          f"{r['ms_per_pass']:.2f} | {r['model_share']:.0%} | "
                          f"{'-' if depth == depths[0] else ratio} |", flush=True)
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
