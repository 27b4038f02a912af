"""`loopctr serve`: an HTTP JSON scoring service over a trained run or an export.

uvicorn (with the httptools parser) runs a plain ASGI application: one event-loop thread parses requests,
validates their rows, scores small batches and answers; one model thread scores large batches (while the loop
keeps answering /health and queueing requests), and one worker process parses and validates bodies of more
than `offload_bytes` (a JSON parse holds the interpreter: on the loop, a 15 MB body would stall every client).
Threads do not grow with connections, and idle kept-alive connections are closed after `keep_alive_s`.
(FastAPI would add a schema layer that the field-by-field validation of `RequestValidator` already covers,
with better messages.)

Micro-batching: the requests read in one turn of the event loop form a batch; requests that arrive while a
batch is scored queue, and everything queued (up to `max_batch_rows` rows) becomes the next batch, one forward
pass per requested depth. With `max_wait_ms` > 0 an idle server also waits that long for company before
scoring a first request.

    POST /predict  {"rows": [{field: raw value, ...}, ...], "depth": optional int or "adaptive",
                    "budget": optional mean passes (adaptive)}  -> {"predictions": [...]}
    GET  /health   GET /metadata   GET /metrics (Prometheus text format)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loopctr.serve.predictor import BadRequest, Predictor, RequestValidator, TooLarge


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    max_batch_rows: int = 8192  # rows in one micro-batch
    max_wait_ms: float = 0.0  # how long an idle server waits for more requests (0: scores what is queued)
    max_request_rows: int = 4096
    chunk_rows: int = Predictor.CHUNK_ROWS  # larger batches: scored in length-sorted chunks this large (0: one)
    max_body_bytes: int = 16 << 20
    request_timeout_s: float = 30.0  # scoring: a queued request not answered by then gets 503
    keep_alive_s: float = 30.0  # an idle kept-alive connection is closed after this long
    header_timeout_s: float = 10.0  # a connection that has not sent a request's headers by then is closed
    body_timeout_s: float = 30.0  # a body not received whole by then (after the headers) gets 408
    max_connections: int = 2048  # a request that makes this many open connections (or requests in flight) gets 503
    # batches of at most this many rows are scored on the event-loop thread itself, larger ones on the model
    # thread (so that the loop keeps answering meanwhile): for small batches the hand-over, and the two
    # threads taking turns on the GIL at every operator, cost 10-25% of the throughput (BENCHMARKS.md)
    inline_rows: int = 64
    # bodies larger than this are parsed and validated in a worker process: the JSON parse of a 15 MB body holds
    # the interpreter for a second, which on the loop would stall every other client (0: every body inline)
    offload_bytes: int = 1 << 20


ENDPOINTS = ("/predict", "/health", "/metadata", "/metrics")
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
    """Request counts, latency and batch-size histograms; updated and read on the event-loop thread only."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)  # encoding and forward pass of one batch

    def request(self, path: str, code: int, seconds: float, rows: int = 0):
        self.requests[(path, code)] = self.requests.get((path, code), 0) + 1
        self.rows += rows
        if path == "/predict":
            self.latency.observe(seconds)

    def render(self) -> str:
        lines = ["# TYPE loopctr_requests_total counter"]
        lines += [f'loopctr_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self.requests.items())]
        errors = sum(n for (p, c), n in self.requests.items() if c >= 400)
        lines += ["# TYPE loopctr_request_errors_total counter", f"loopctr_request_errors_total {errors}",
                  "# TYPE loopctr_rows_scored_total counter", f"loopctr_rows_scored_total {self.rows}"]
        lines += self.latency.lines("loopctr_predict_latency_seconds")
        lines += self.batch_rows.lines("loopctr_batch_rows")
        lines += self.batch_seconds.lines("loopctr_batch_seconds")
        return "\n".join(lines) + "\n"


class BodyTimeout(BadRequest):
    """A request body that did not arrive in time (answered with HTTP 408)."""


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers: uvicorn alone holds open, for
    ever, a connection that sends nothing or sends its headers a byte at a time (slowloris). The deadline runs
    from the connection's opening, then from the first byte of each later request on it."""

    header_timeout_s = 10.0
    _deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class Job:
    def __init__(self, columns: dict[str, list], rows: int, depth, future: asyncio.Future):
        self.columns, self.rows, self.depth, self.future = columns, rows, depth, future


class MicroBatcher:
    """Queues jobs on the event loop and scores them in batches: small ones on the loop itself, large ones on
    one model thread (see `ServeConfig.inline_rows`)."""

    def __init__(self, predictor: Predictor, config: ServeConfig, metrics: Metrics):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="loopctr-model")
        self.queued: deque[Job] = deque()
        self.busy = False  # a batch is being scored or about to be

    def submit(self, job: Job) -> None:
        self.queued.append(job)
        if not self.busy:
            self.busy = True
            loop = asyncio.get_running_loop()
            if self.config.max_wait_ms > 0 and job.rows < self.config.max_batch_rows:
                loop.call_later(self.config.max_wait_ms / 1000.0, self._start)
            else:
                loop.call_soon(self._start)  # after the other requests read in this turn of the loop: they join

    def _start(self) -> None:
        jobs, rows = [], 0
        while self.queued and (not jobs or rows + self.queued[0].rows <= self.config.max_batch_rows):
            jobs.append(self.queued.popleft())
            rows += jobs[-1].rows
        jobs = [j for j in jobs if not j.future.done()]  # timed-out requests are not scored
        if not jobs:
            self._next()
        elif sum(j.rows for j in jobs) <= self.config.inline_rows:
            self._finish(jobs, *self._score(jobs))
        else:
            scored = asyncio.get_running_loop().run_in_executor(self.model_thread, self._score, jobs)
            scored.add_done_callback(lambda done: self._finish_from_thread(jobs, done))

    def _score(self, jobs: list[Job]) -> tuple[list, list[tuple[int, float]]]:
        """One forward pass per depth. (predictions or exception per job, forward passes)."""
        answers: dict[int, object] = {}
        passes = []  # (rows, seconds) of every forward pass
        for depth in dict.fromkeys(j.depth for j in jobs):
            group = [j for j in jobs if j.depth == depth]
            columns = {name: [v for j in group for v in j.columns[name]] for name in group[0].columns}
            started = time.perf_counter()
            try:
                preds = self.predictor.predict_columns(columns, depth).tolist()
            except Exception as exc:  # reported to each request of the group; the service keeps serving
                answers.update((id(j), exc) for j in group)
                continue
            passes.append((len(preds), time.perf_counter() - started))
            start = 0
            for j in group:
                answers[id(j)] = preds[start:start + j.rows]
                start += j.rows
        return [answers[id(j)] for j in jobs], passes

    def _finish_from_thread(self, jobs: list[Job], done: asyncio.Future) -> None:
        try:
            answers, passes = done.result()
        except Exception as exc:  # the model thread itself failed (e.g. shut down): fail the batch, not the loop
            answers, passes = [exc] * len(jobs), []
        self._finish(jobs, answers, passes)

    def _finish(self, jobs: list[Job], answers: list, passes: list[tuple[int, float]]) -> None:
        for rows, seconds in passes:
            self.metrics.batch_rows.observe(rows)
            self.metrics.batch_seconds.observe(seconds)
        for job, answer in zip(jobs, answers):
            if job.future.done():
                continue
            if isinstance(answer, Exception):
                job.future.set_exception(answer)
            else:
                job.future.set_result(answer)
        self._next()

    def _next(self) -> None:
        if self.queued:  # what queued during the batch forms the next one, once the loop has read what arrived
            asyncio.get_running_loop().call_soon(self._start)
        else:
            self.busy = False


_worker_validator: RequestValidator | None = None  # the validator of a parsing worker process


def _start_parser(validator: RequestValidator) -> None:
    global _worker_validator
    _worker_validator = validator


def _parse_in_worker(raw: bytes):
    return _worker_validator.parse(raw)


class ScoringApp:
    """The ASGI application: routes, request validation, JSON answers, metrics."""

    def __init__(self, predictor: Predictor, config: ServeConfig):
        self.predictor, self.config = predictor, config
        self.metrics = Metrics()
        self.batcher = MicroBatcher(predictor, config, self.metrics)
        self._parsers: ProcessPoolExecutor | None = None  # started by the first large body
        self.get_routes = {"/health": lambda: {"status": "ok"}, "/metadata": predictor.metadata,
                           "/metrics": self.metrics.render}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/predict":
            try:
                code, body, rows = await self._predict(scope, receive)
            except ConnectionAbortedError:  # the client left before sending its whole body
                return
        elif method in ("GET", "HEAD") and path in self.get_routes:
            code, body, rows = 200, self.get_routes[path](), 0
        elif path in ENDPOINTS:
            code, body, rows = 405, {"error": f"{method} {path} is not allowed; use POST /predict, GET (or HEAD) "
                                              "the others"}, 0
        else:
            code, body, rows = 404, {"error": f"no endpoint {path}; use POST /predict, GET /health, /metadata, "
                                              f"/metrics"}, 0
        if isinstance(body, str):
            data, content_type = body.encode(), b"text/plain; version=0.0.4"
        else:
            data, content_type = json.dumps(body).encode(), b"application/json"
        headers = [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]
        if code in (408, 413):
            headers.append((b"connection", b"close"))  # an unread body makes the connection unusable
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": data if method != "HEAD" else b""})
        # unknown paths are counted together: a label per probed path would grow the metrics without bound
        self.metrics.request(path if path in ENDPOINTS else "other", code, time.perf_counter() - started, rows)

    async def _read_body(self, scope, receive) -> bytes:
        limit = self.config.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            raise BadRequest(f"the Content-Length header is not a number: {declared.decode(errors='replace')!r}")
        if int(declared) > limit:
            raise TooLarge(f"body of {int(declared)} bytes exceeds {limit}")
        chunks, size, more = [], 0, True
        deadline = time.monotonic() + self.config.body_timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(f"the body did not arrive within {self.config.body_timeout_s}s "
                                  f"({size} of {int(declared)} bytes)") from None
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                raise TooLarge(f"body of more than {limit} bytes exceeds {limit}")
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _parse(self, raw: bytes):
        """`RequestValidator.parse` of the body: inline, or for a large body in the parsing worker process (one:
        large bodies queue for it, the loop keeps serving the others)."""
        if len(raw) <= self.config.offload_bytes:
            return self.predictor.validator.parse(raw)
        if self._parsers is None:  # spawned, not forked: a fork of a process running torch threads can hang
            self._parsers = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), _start_parser,
                                                (self.predictor.validator,))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._parsers, _parse_in_worker, raw)
        except BrokenProcessPool:  # the worker died (killed, out of memory): the next large body starts another
            self._parsers = None
            raise

    def close(self) -> None:
        self.batcher.model_thread.shutdown(wait=False)
        if self._parsers is not None:
            self._parsers.shutdown(wait=False, cancel_futures=True)

    async def _predict(self, scope, receive) -> tuple[int, dict, int]:
        """(status, JSON body, rows scored) of one POST /predict."""
        try:
            raw = await self._read_body(scope, receive)
            columns, n, depth, budget = await self._parse(raw)
            depth = self.predictor.resolve_depth(depth, budget)
        except BadRequest as exc:
            code = 413 if isinstance(exc, TooLarge) else 408 if isinstance(exc, BodyTimeout) else 400
            return code, {"error": str(exc)}, 0
        except BrokenProcessPool:
            return 503, {"error": "the request parser stopped while reading this body; send it again"}, 0
        future = asyncio.get_running_loop().create_future()
        self.batcher.submit(Job(columns, n, depth, future))
        try:
            predictions = await asyncio.wait_for(future, self.config.request_timeout_s)
        except asyncio.TimeoutError:
            return 503, {"error": f"timed out after {self.config.request_timeout_s}s"}, 0
        except BadRequest as exc:
            return 400, {"error": str(exc)}, 0
        except Exception as exc:
            return 500, {"error": f"{type(exc).__name__}: {exc}"}, 0
        return 200, {"predictions": predictions}, n


class Server:
    """A bound, not yet running service: `serve_forever()` blocks (until `shutdown()` from another thread)."""

    def __init__(self, run_dir, config: ServeConfig | None = None):
        self.config = config or ServeConfig()
        self.app = ScoringApp(Predictor(run_dir, self.config.max_request_rows, self.config.chunk_rows),
                              self.config)
        self.socket = socket.create_server((self.config.host, self.config.port))
        self.server_address = self.socket.getsockname()[:2]
        self._stopped = threading.Event()
        protocol = type("Protocol", (HeaderDeadlineProtocol,), {"header_timeout_s": self.config.header_timeout_s})
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            self.app, http=protocol, loop="auto", lifespan="off", access_log=False, log_level="warning",
            timeout_keep_alive=int(self.config.keep_alive_s), limit_concurrency=self.config.max_connections,
            server_header=False, proxy_headers=False))  # no client addresses are used: one middleware less

    def serve_forever(self) -> None:
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._uvicorn.should_exit = True
        self._stopped.wait(10)

    def server_close(self) -> None:
        self.socket.close()
        self.app.close()


def build_server(run_dir, config: ServeConfig | None = None) -> Server:
    return Server(run_dir, config)


def serve(run_dir, config: ServeConfig | None = None, log=print):
    server = build_server(run_dir, config)
    host, port = server.server_address
    log(f"serving {run_dir} on http://{host}:{port} (POST /predict, GET /health /metadata /metrics)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
