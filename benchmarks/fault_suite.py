"""Reliability suite: bad inputs, kill -9 and a hostile load, replayed against the real commands.

1. Bad inputs: every class of malformed setting, source file, run directory and HTTP request that users and
   attackers send; each must end in a one-line error (exit status 2, no traceback) or a 4xx, never a traceback, a
   500 or code run from a crafted file.
2. kill -9: `loopctr train` (and `loopctr prepare`) killed at random moments, then resumed (or rerun) until done;
   each must end with the weights and `metrics.jsonl` of an uninterrupted run (the prepared dataset of a clean
   prepare).
3. Load: `loopctr serve` under good clients, bad clients, slowloris connections and one very large request a
   second; good requests must be answered correctly, and their p99 latency is compared with the idle one.

Everything runs on the built-in synthetic data in --out (nothing is read from elsewhere):

    python benchmarks/fault_suite.py --out DIR [--kills 20] [--good 4] [--bad 4] [--slowloris 1000]
        [--big-mb 15] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from serve_load import connect, start_server

TINY = ["users=150", "items=300", "categories=10", "cluster_size=5", "min_events=4", "max_events=10"]
SMALL = ["batch_size=64", "threads=1", "embedding_dim=8", "seed=3"]
TIMING = {"samples_per_s", "seconds", "elapsed_s", "train_seconds", "eval_seconds", "time"}


def cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loopctr.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def one_line_error(done: subprocess.CompletedProcess) -> bool:
    lines = done.stderr.strip().splitlines()
    return done.returncode == 2 and len(lines) == 1 and "error:" in lines[0] and "Traceback" not in done.stderr


# -- 1. bad inputs ---------------------------------------------------------------------------------------
class Payload:
    """Unpickling runs `touch marker`: what a crafted checkpoint would do if it were loaded with pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


X1_HEADER = "label,user_id,item_id,cate_id,item_history,cate_history"
X1_ROWS = "1,u1,i1,c1,i2^i3,c1^c2\n0,u1,i2,c2,i1,c1\n"


def write_csvs(directory: Path, raw: bytes) -> Path:
    """The same bytes as the train, valid and test split of an Amazon-x1-format source directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (directory / f"{split}.csv").write_bytes(raw)
    return directory


def cli_classes(work: Path, data: Path, run: Path) -> list[tuple[str, list]]:
    """(class, argv) of every bad command line and file; each must be a one-line error."""
    classes = [
        ("unknown setting", ["train", "--data", data, "--model", "dnn", "--out", work / "r1", "epoch=1"]),
        ("setting of the wrong type", ["train", "--data", data, "--model", "dnn", "--out", work / "r2", "lr=fast"]),
        ("NaN setting", ["train", "--data", data, "--model", "dnn", "--out", work / "r3", "lr=nan"]),
        ("infinite setting", ["train", "--data", data, "--model", "dnn", "--out", work / "r4", "lr=inf"]),
        ("negative epochs", ["train", "--data", data, "--model", "dnn", "--out", work / "r5", "epochs=-1"]),
        ("unknown model", ["train", "--data", data, "--model", "dnm", "--out", work / "r6"]),
        ("missing dataset directory", ["train", "--data", work / "nowhere", "--model", "dnn", "--out", work / "r7"]),
        ("a run directory as the dataset", ["train", "--data", run, "--model", "dnn", "--out", work / "r8"]),
        ("train into a finished run", ["train", "--data", data, "--model", "dnn", "--out", run]),
        ("resume with a changed setting", ["train", "--out", run, "--resume", "lr=0.5"]),
        ("evaluate a directory that is not a run", ["evaluate", "--run", data]),
        ("unknown catalogue dataset", ["prepare", "--dataset", "amazon-electronix", "--out", work / "p1"]),
        ("prepare into a run directory", ["prepare", "--dataset", "synthetic", "--out", run, "--overwrite"]),
        ("missing source directory", ["prepare", "--dataset", "amazon-electronics-x1", "--source", work / "none",
                                      "--out", work / "p2"]),
    ]
    files = [
        ("empty file", b""),
        ("header without rows", (X1_HEADER + "\n").encode()),
        ("missing column", b"label,item_id\n1,i1\n"),
        ("column named twice", (X1_HEADER + ",item_id\n1,u1,i1,c1,i2,c2,i9\n").encode()),
        ("bytes that are not UTF-8", (X1_HEADER + "\n1,u1,caf\xe9,c1,i2,c2\n").encode("latin-1")),
        ("wrong column count", (X1_HEADER + "\n1,u1,i1,c1\n").encode()),
        ("label that is not 0/1", (X1_HEADER + "\n2,u1,i1,c1,i2,c2\n").encode()),
        ("empty token in a history", (X1_HEADER + "\n1,u1,i1,c1,i2^^i3,c1^c1^c2\n").encode()),
        ("paired histories of different lengths", (X1_HEADER + "\n1,u1,i1,c1,i2^i3,c1\n").encode()),
    ]
    for name, raw in files:
        slug = name.replace(" ", "-").replace("/", "")
        classes.append((f"source: {name}", ["prepare", "--dataset", "amazon-electronics-x1", "--source",
                                            write_csvs(work / "src" / slug, raw), "--out", work / "prepared" / slug]))
    crafted = work / "crafted"
    shutil.copytree(run, crafted)
    marker = work / "code-ran"
    (crafted / "best.pt").write_bytes(pickle.dumps({"model": Payload(marker)}))
    classes += [("crafted best.pt: evaluate", ["evaluate", "--run", crafted]),
                ("crafted best.pt: export", ["export", "--run", crafted]),
                ("crafted best.pt: serve", ["serve", "--run", crafted, "--port", "0"])]
    resume = work / "crafted-resume"
    shutil.copytree(run, resume)
    (resume / "checkpoint.pt").write_bytes(pickle.dumps({"model": Payload(marker)}))
    classes.append(("crafted checkpoint.pt: resume", ["train", "--out", resume, "--resume", "epochs=5"]))
    return classes


def http_classes(rows: list[dict]) -> list[tuple[str, bytes]]:
    """(class, raw HTTP request) of every malformed request; each must get a 4xx."""
    row = rows[0]

    def post(body: bytes, extra: str = "") -> bytes:
        return (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    js = lambda obj: post(json.dumps(obj).encode())  # noqa: E731
    history = {**row, "item_history": "1^2^3", "cate_history": "1"}
    return [
        ("not JSON", post(b"{not json")), ("JSON nested 100,000 deep", post(b"[" * 100_000)),
        ("integer of 5,000 digits", post(b'{"rows": [{"item_id": ' + b"7" * 5000 + b"}]}")),
        ("bytes that are not UTF-8", post(b'{"rows": "\xff\xfe"}')),
        ("not an object", js([1, 2])), ("unknown key", js({"rowz": []})), ("no rows", js({"depth": 1})),
        ("empty rows", js({"rows": []})), ("row not an object", js({"rows": [3]})),
        ("missing field", js({"rows": [{"item_id": "1"}]})), ("unknown field", js({"rows": [{**row, "price": 1}]})),
        ("wrong type", js({"rows": [{**row, "item_id": [1]}]})),
        ("empty token", js({"rows": [{**row, "item_history": "1^^2"}]})),
        ("paired histories of different lengths", js({"rows": [history]})),
        ("depth of a model without loops", js({"rows": [row], "depth": 2})),
        ("too many rows", js({"rows": [row] * 5000})),
        ("body over the limit (declared)", post(b"", "X-Pad: 1\r\n").replace(b"Content-Length: 0",
                                                                          b"Content-Length: 99999999")),
        ("Content-Length not a number", post(b"{}").replace(b"Content-Length: 2", b"Content-Length: zz")),
        ("not HTTP", b"\x00\xff not http at all\r\n\r\n"),
        ("unknown path", b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("wrong method", b"DELETE /predict HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]


def http_status(address: str, request: bytes) -> int:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = sock.recv(65536)
    return int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def bad_inputs(work: Path, data: Path, run: Path, rows: list[dict]) -> dict:
    outcomes = []
    for name, argv in cli_classes(work, data, run):
        try:
            done = cli(*argv, timeout=120)
        except subprocess.TimeoutExpired:
            outcomes.append((name, False, ["still running after 120 s"]))
            continue
        outcomes.append((name, one_line_error(done), done.stderr.strip().splitlines()[-1:] or [done.returncode]))
    bom = write_csvs(work / "src" / "bom", b"\xef\xbb\xbf" + (X1_HEADER + "\n" + X1_ROWS).encode())
    done = cli("prepare", "--dataset", "amazon-electronics-x1", "--source", bom, "--out", work / "prepared" / "bom")
    outcomes.append(("source with a byte-order mark (must prepare)", done.returncode == 0, [done.returncode]))
    proc, address = start_server(str(run), 0.0, 1)
    try:
        for name, request in http_classes(rows):
            code = http_status(address, request)
            outcomes.append((f"HTTP: {name}", 400 <= code < 500, [code]))
        ok = post_rows(connect(address), rows)[0] == 200
        outcomes.append(("HTTP: a good request after all of them", ok, []))
    finally:
        proc.kill()
    ran = (work / "code-ran").exists()
    outcomes.append(("no code ran from a crafted file", not ran, []))
    return {"classes": len(outcomes), "handled": sum(ok for _, ok, _ in outcomes),
            "failed": [f"{name}: {detail}" for name, ok, detail in outcomes if not ok], "code_executed": ran}


# -- 2. kill -9 --------------------------------------------------------------------------------------------
def weights(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def log_lines(run: Path) -> list[dict]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in e.items() if k not in TIMING and not k.endswith("_s")} for e in events]


def train_argv(data: Path, out: Path) -> list:
    return ["train", "--data", data, "--model", "dnn", "--out", out, "hidden_units=[32,16]", "epochs=4",
            "checkpoint_every=7", "early_stop_patience=0", *SMALL]


def kill_at_random(argv: list, seconds: float, rng: random.Random) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "loopctr.cli.main", *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    moment = rng.uniform(0.0, seconds)
    try:
        proc.wait(moment)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return moment


def kills(work: Path, data: Path, n: int, seed: int) -> dict:
    import torch

    rng = random.Random(seed)
    straight = work / "kill-straight"
    started = time.perf_counter()
    assert cli(*train_argv(data, straight)).returncode == 0
    seconds = time.perf_counter() - started
    reference, reference_log = weights(straight), log_lines(straight)
    clean = work / "kill-prepare-clean"
    assert cli("prepare", "--dataset", "synthetic", "--out", clean, *TINY).returncode == 0
    results = []
    for i in range(n):
        if i % 4 == 3:  # every fourth kill hits `loopctr prepare`, then the command is repeated
            out = work / f"kill-prepare-{i}"
            kill_at_random(["prepare", "--dataset", "synthetic", "--out", out, *TINY], 3.0, rng)
            done = cli("prepare", "--dataset", "synthetic", "--out", out, *TINY)
            same = done.returncode == 0 and all(
                np.array_equal(np.load(p), np.load(out / p.relative_to(clean))) for p in clean.rglob("*.npy"))
            results.append(("prepare", same))
            continue
        out = work / f"kill-train-{i}"
        kill_at_random(train_argv(data, out), seconds, rng)
        for _ in range(5):  # resume until it finishes
            if (out / "metrics.json").exists():
                break
            argv = ["train", "--out", out, "--resume"] if (out / "config.yaml").exists() else train_argv(data, out)
            if cli(*argv).returncode == 0:
                break
        got = weights(out)
        same_weights = all(torch.equal(reference[k], got[k]) for k in reference)
        same_log = log_lines(out) == reference_log
        results.append((f"train (weights {'equal' if same_weights else 'differ'}, metrics.jsonl "
                        f"{'equal' if same_log else 'differs'})", same_weights and same_log))
    return {"kills": n, "identical": sum(ok for _, ok in results),
            "failed": [f"kill {i}: {kind}" for i, (kind, ok) in enumerate(results) if not ok],
            "straight_run_seconds": round(seconds, 2)}


# -- 3. load -----------------------------------------------------------------------------------------------
def post_rows(conn, rows: list[dict]) -> tuple[int, list, float]:
    started = time.perf_counter()
    conn.request("POST", "/predict", body=json.dumps({"rows": rows}), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    return resp.status, body.get("predictions", []), time.perf_counter() - started


def good_client(address: str, rows, expected, stop: threading.Event, out: list):
    conn = connect(address)
    while not stop.is_set():
        try:
            code, predictions, seconds = post_rows(conn, rows)
        except (OSError, ValueError):
            out.append((False, float("nan")))
            conn = connect(address)
            continue
        out.append((code == 200 and np.allclose(predictions, expected, rtol=1e-5, atol=1e-7), seconds))


def bad_client(address: str, requests: list[bytes], stop: threading.Event, out: list):
    i = 0
    while not stop.is_set():
        out.append(http_status(address, requests[i % len(requests)]))
        i += 1


def slowloris(address: str, n: int, stop: threading.Event, counts: dict):
    host, port = address.split(":")
    socks: list[socket.socket] = []
    while not stop.is_set():
        while len(socks) < n:
            try:
                s = socket.create_connection((host, int(port)), timeout=5)
                s.sendall(b"POST /predict HTTP/1.1\r\n")
                socks.append(s)
                counts["opened"] += 1
            except OSError:
                counts["refused"] += 1
                break
        alive = []
        for s in socks:  # one more header byte each second; a socket the server closed is replaced
            try:
                s.sendall(b"X")
                alive.append(s)
            except OSError:
                counts["closed_by_server"] += 1
                s.close()
        socks = alive
        stop.wait(1.0)
    for s in socks:
        s.close()


def big_requests(address: str, row: dict, megabytes: float, stop: threading.Event, out: list):
    history = "^".join(["5"] * int(megabytes * 1e6 / 4))  # two histories of 2 bytes an event: `megabytes` MB
    big = {**row, "item_history": history, "cate_history": history}
    size = len(json.dumps({"rows": [big]}))
    while not stop.is_set():
        started = time.perf_counter()
        try:
            code = post_rows(connect(address), [big])[0]
        except (OSError, ValueError):
            code = 0
        out.append((code, time.perf_counter() - started, size))
        stop.wait(max(0.0, 1.0 - (time.perf_counter() - started)))


def load(run: Path, rows: list[dict], good: int, bad: int, loris: int, megabytes: float, seconds: float) -> dict:
    from loopctr.serve.predictor import Predictor

    expected = Predictor(run).predict(rows)
    proc, address = start_server(str(run), 0.0, 1)
    try:
        conn = connect(address)
        idle = [post_rows(conn, rows)[2] for _ in range(300)]
        stop, good_out, bad_out, big_out = threading.Event(), [], [], []
        counts = {"opened": 0, "refused": 0, "closed_by_server": 0}
        bad_requests = [r for _, r in http_classes(rows)]
        threads = ([threading.Thread(target=good_client, args=(address, rows, expected, stop, good_out))
                    for _ in range(good)]
                   + [threading.Thread(target=bad_client, args=(address, bad_requests, stop, bad_out))
                      for _ in range(bad)]
                   + [threading.Thread(target=slowloris, args=(address, loris, stop, counts))]
                   + [threading.Thread(target=big_requests, args=(address, rows[0], megabytes, stop, big_out))])
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        proc.kill()
    ok = [s for good_, s in good_out if good_]
    p99_idle, p99_load = float(np.percentile(idle, 99)), float(np.percentile(ok, 99)) if ok else float("nan")
    return {"good_requests": len(good_out), "good_correct": len(ok),
            "idle_p50_ms": round(1000 * float(np.median(idle)), 2), "idle_p99_ms": round(1000 * p99_idle, 2),
            "load_p50_ms": round(1000 * float(np.median(ok)), 2) if ok else None,
            "load_p99_ms": round(1000 * p99_load, 2), "p99_ratio": round(p99_load / p99_idle, 2),
            "bad_requests": len(bad_out), "bad_4xx": sum(400 <= c < 500 for c in bad_out),
            "bad_5xx": sum(c >= 500 for c in bad_out), "slowloris": counts,
            "big_requests": len(big_out), "big_mb": round(big_out[0][2] / 1e6, 1) if big_out else None,
            "big_ok": sum(c == 200 for c, _, _ in big_out),
            "big_seconds_max": round(max((s for _, s, _ in big_out), default=0.0), 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="work directory (data, runs, the report)")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--good", type=int, default=4)
    p.add_argument("--bad", type=int, default=4)
    p.add_argument("--slowloris", type=int, default=1000)
    p.add_argument("--big-mb", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = args.out
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data = work / "data"
    assert cli("prepare", "--dataset", "synthetic", "--out", data, *TINY).returncode == 0
    run = work / "din"
    assert cli("train", "--data", data, "--model", "din", "--out", run, "epochs=1", "dnn_hidden_units=[16]",
               "attention_hidden_units=[8]", *SMALL).returncode == 0
    from loopctr.data.dataset import PreparedDataset

    rows = PreparedDataset(data).raw_rows("test", 8)
    report = {"bad_inputs": bad_inputs(work, data, run, rows), "kill9": kills(work, data, args.kills, args.seed),
              "load": load(run, rows, args.good, args.bad, args.slowloris, args.big_mb, args.seconds)}
    (work / "fault_suite.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
