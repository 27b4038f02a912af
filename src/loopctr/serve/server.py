"""`loopctr serve`: an HTTP JSON scoring service over a trained run.

Standard library only (ThreadingHTTPServer): a dependency-free server is one thing less to install and
secure; its per-request cost (about 1 ms of Python) is measured in BENCHMARKS.md. Concurrent requests are micro-batched: a batching thread takes the
first waiting request with every other one already queued (up to `max_batch_rows` rows), optionally waits
`max_wait_ms` for more, runs one forward pass per requested depth and hands each request its slice. The
default wait is 0: requests that arrive while a batch is being scored queue up and form the next batch by
themselves, so waiting only adds latency to a server that is idle anyway.

    POST /predict  {"rows": [{field: raw value, ...}, ...], "depth": optional int}  -> {"predictions": [...]}
    GET  /health   GET /metadata   GET /metrics (Prometheus text format)
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loopctr.serve.predictor import BadRequest, Predictor, TooLarge


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    max_batch_rows: int = 8192  # rows in one micro-batch
    max_wait_ms: float = 0.0  # how long the batcher waits for more requests (0: takes what is queued)
    max_request_rows: int = 4096
    max_body_bytes: int = 16 << 20
    request_timeout_s: float = 30.0


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 8, 32, 128, 512, 2048, 8192)


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float):
        self.total += 1
        self.sum += value
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{edge}"}} {count}' for edge, count in zip(self.buckets, self.counts)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum}", f"{name}_count {self.total}"]
        return out


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)

    def request(self, path: str, code: int, seconds: float, rows: int = 0):
        with self.lock:
            self.requests[(path, code)] = self.requests.get((path, code), 0) + 1
            self.rows += rows
            if path == "/predict":
                self.latency.observe(seconds)

    def batch(self, rows: int):
        with self.lock:
            self.batch_rows.observe(rows)

    def render(self) -> str:
        with self.lock:
            lines = ["# TYPE loopctr_requests_total counter"]
            lines += [f'loopctr_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self.requests.items())]
            errors = sum(n for (p, c), n in self.requests.items() if c >= 400)
            lines += ["# TYPE loopctr_request_errors_total counter", f"loopctr_request_errors_total {errors}",
                      "# TYPE loopctr_rows_scored_total counter", f"loopctr_rows_scored_total {self.rows}"]
            lines += self.latency.lines("loopctr_predict_latency_seconds")
            lines += self.batch_rows.lines("loopctr_batch_rows")
        return "\n".join(lines) + "\n"


class Job:
    def __init__(self, columns: dict[str, list], rows: int, depth):
        self.columns, self.rows, self.depth = columns, rows, depth
        self.done = threading.Event()
        self.result = None
        self.error: Exception | None = None


class MicroBatcher:
    def __init__(self, predictor: Predictor, config: ServeConfig, metrics: Metrics):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="loopctr-batcher")
        self.thread.start()

    def submit(self, job: Job) -> Job:
        self.jobs.put(job)
        return job

    def _collect(self) -> list[Job]:
        batch = [self.jobs.get()]
        rows = batch[0].rows
        deadline = time.perf_counter() + self.config.max_wait_ms / 1000.0
        while rows < self.config.max_batch_rows:
            remaining = deadline - time.perf_counter()
            try:
                job = self.jobs.get(timeout=max(remaining, 0.0)) if remaining > 0 else self.jobs.get_nowait()
            except queue.Empty:
                break
            batch.append(job)
            rows += job.rows
        return batch

    def _run(self):
        while True:
            jobs = self._collect()
            for depth in {j.depth for j in jobs}:
                group = [j for j in jobs if j.depth == depth]
                columns = {name: [v for j in group for v in j.columns[name]] for name in group[0].columns}
                try:
                    preds = self.predictor.predict_columns(columns, depth)
                    self.metrics.batch(len(preds))
                    start = 0
                    for j in group:
                        j.result = preds[start:start + j.rows].tolist()
                        start += j.rows
                except Exception as exc:  # reported to each waiting request; the batcher keeps serving
                    for j in group:
                        j.error = exc
                for j in group:
                    j.done.set()


def make_handler(predictor: Predictor, batcher: MicroBatcher, metrics: Metrics, config: ServeConfig):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # keep-alive clients: without TCP_NODELAY the headers-then-body writes of a response meet the client's
        # delayed ACK and every request on a kept-alive connection stalls about 40 ms
        disable_nagle_algorithm = True

        def log_message(self, *args):  # metrics, not access logs
            pass

        def _send(self, code: int, body, content_type="application/json", rows: int = 0, started=None):
            data = (json.dumps(body) if content_type == "application/json" else body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            metrics.request(self.path, code, time.perf_counter() - (started or time.perf_counter()), rows)

        def do_GET(self):
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/metadata":
                self._send(200, predictor.metadata())
            elif self.path == "/metrics":
                self._send(200, metrics.render(), "text/plain; version=0.0.4")
            else:
                self._send(404, {"error": f"no endpoint {self.path}; use POST /predict, GET /health, /metadata, /metrics"})

        def do_POST(self):
            started = time.perf_counter()
            if self.path != "/predict":
                self._send(404, {"error": f"no endpoint {self.path}; use POST /predict"}, started=started)
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(411, {"error": "a Content-Length header is required"}, started=started)
                return
            if length > config.max_body_bytes:
                self.close_connection = True  # the unread body makes the connection unusable
                self._send(413, {"error": f"body of {length} bytes exceeds {config.max_body_bytes}"}, started=started)
                return
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object with 'rows'")
                unknown = set(body) - {"rows", "depth"}
                if unknown:
                    raise BadRequest(f"unknown key(s) {sorted(unknown)}; expected 'rows' and optional 'depth'")
                if "rows" not in body:
                    raise BadRequest("missing 'rows'")
                columns = predictor.validate(body["rows"])
                depth = body.get("depth")
                predictor.check_depth(depth)
            except json.JSONDecodeError as exc:
                self._send(400, {"error": f"malformed JSON: {exc}"}, started=started)
                return
            except BadRequest as exc:
                self._send(413 if isinstance(exc, TooLarge) else 400, {"error": str(exc)}, started=started)
                return
            job = batcher.submit(Job(columns, len(body["rows"]), depth))
            if not job.done.wait(config.request_timeout_s):
                self._send(503, {"error": f"timed out after {config.request_timeout_s}s"}, started=started)
            elif isinstance(job.error, BadRequest):
                self._send(400, {"error": str(job.error)}, started=started)
            elif job.error is not None:
                self._send(500, {"error": f"{type(job.error).__name__}: {job.error}"}, started=started)
            else:
                self._send(200, {"predictions": job.result}, rows=job.rows, started=started)

    return Handler


def build_server(run_dir, config: ServeConfig | None = None) -> ThreadingHTTPServer:
    config = config or ServeConfig()
    predictor = Predictor(run_dir, max_rows=config.max_request_rows)
    metrics = Metrics()
    batcher = MicroBatcher(predictor, config, metrics)
    server = ThreadingHTTPServer((config.host, config.port), make_handler(predictor, batcher, metrics, config))
    server.daemon_threads = True
    return server


def serve(run_dir, config: ServeConfig | None = None, log=print):
    server = build_server(run_dir, config)
    host, port = server.server_address[:2]
    log(f"serving {run_dir} on http://{host}:{port} (POST /predict, GET /health /metadata /metrics)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
