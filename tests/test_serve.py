"""Serving end to end: raw rows in, the same probabilities as evaluation out; bad requests get 4xx."""

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import load_script, raw_rows
from loopctr.cli.main import main
from loopctr.data.dataset import PreparedDataset
from loopctr.data.loader import BatchLoader
from loopctr.serve.predictor import Predictor, program_inputs
from loopctr.serve.server import Job, Metrics, MicroBatcher, ServeConfig, build_server
from loopctr.train.distributed import DistEnv
from loopctr.train.evaluate import predict


@pytest.fixture(scope="module")
def din_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "din"
    args = ["train", "--data", str(tiny_data), "--model", "din", "--out", str(run), "epochs=1", "batch_size=64",
            "threads=1", "embedding_dim=8", "dnn_hidden_units=[16]", "attention_hidden_units=[8]"]
    assert main(args) == 0
    return run


def test_predictor_equals_evaluation(din_run, tiny_data):
    predictor = Predictor(din_run)
    rows = raw_rows(tiny_data)
    served = np.array(predictor.predict(rows))
    ds = PreparedDataset(tiny_data)
    arrays, _ = predict(predictor.model, BatchLoader(ds.split("test"), 1000), DistEnv())
    np.testing.assert_allclose(served, arrays["preds"][:len(rows)], rtol=1e-5, atol=1e-6)
    # histories as JSON lists and integer ids give the same answer
    listed = [{**r, "item_history": r["item_history"].split("^")} for r in rows]
    np.testing.assert_allclose(predictor.predict(listed), served, rtol=1e-6)


def assert_small_path_encodes_as_prepare(predictor, rows):
    """Requests of 1..SMALL_ROWS rows: `encode_small` gives exactly `encode`'s tensors (dtypes included)."""
    for size in range(1, predictor.SMALL_ROWS + 1):
        for start in range(0, len(rows) - size + 1, 3):
            columns = predictor.validate(rows[start:start + size])
            small, full = predictor.encode_small(columns), predictor.encode(columns)
            assert small.features.keys() == full.features.keys() and len(small.sequences) == len(full.sequences)
            pairs = [(small.label, full.label), *((small.features[k], v) for k, v in full.features.items())]
            for a, b in zip(small.sequences, full.sequences):
                assert a.values.keys() == b.values.keys() and a.width == b.width
                pairs += [(a.offsets, b.offsets), (a.lengths, b.lengths), *((a.values[k], v) for k, v in b.values.items())]
            for got, expected in pairs:
                assert got.dtype == expected.dtype
                torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_small_requests_skip_pyarrow_and_encode_the_same(din_run, tiny_data):
    predictor = Predictor(din_run)
    rows = raw_rows(tiny_data, n=16)
    rows[0].update(item_history="", cate_history="")  # no history
    long = predictor.schema.field("item_history").max_len + 7  # more events than are kept
    rows[4].update(item_history="^".join(str(i) for i in range(long)), cate_history="^".join(["3"] * long))
    rows[5].update(item_id="never-seen", item_history="never-seen^also-new", cate_history="c-new^c-new")
    assert_small_path_encodes_as_prepare(predictor, rows)


def test_small_path_with_numeric_fields_post_padding_and_a_max_len(tmp_path):
    schema = tmp_path / "own.yaml"
    schema.write_text("name: own\nlabel: clicked\nsplits: {train: train.csv, valid: valid.csv, test: test.csv}\n"
                      "fields:\n  - {name: price, type: numeric, normalize: standard}\n"
                      "  - {name: shop, type: categorical}\n"
                      "  - {name: visits, type: sequence, separator: '|', max_len: 6, padding: post}\n")
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "valid", "test"):
        lines = ["clicked,price,shop,visits"] + [
            f"{int(rng.random() < 0.4)},{rng.normal(5, 2):.3f},s{rng.integers(6)},"
            + "|".join(f"v{rng.integers(20)}" for _ in range(rng.integers(0, 9))) for _ in range(60)]
        (src / f"{split}.csv").write_text("\n".join(lines) + "\n")
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["prepare", "--dataset", str(schema), "--source", str(src), "--out", str(data)]) == 0
    assert main(["train", "--data", str(data), "--model", "dnn", "--out", str(run), "epochs=1", "batch_size=32",
                 "threads=1", "embedding_dim=4", "hidden_units=[8]", "max_len=4"]) == 0
    predictor = Predictor(run)
    rows = [{k: v for k, v in zip(("clicked", "price", "shop", "visits"), line.split(","))}
            for line in (src / "test.csv").read_text().splitlines()[1:20]]
    rows = [{**r, "price": float(r["price"])} for r in rows]
    rows[1]["shop"] = "never-seen"
    assert_small_path_encodes_as_prepare(predictor, rows)


def _request(url, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class RunningServer:
    """`loopctr serve` in a background thread of the test process."""

    def __init__(self, run, **config):
        self.server = build_server(run, ServeConfig(port=0, **config))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        for _ in range(100):  # bound at once; answering once uvicorn's loop runs
            try:
                if _request(self.url + "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the test server did not answer /health (thread alive: {self.thread.is_alive()})")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(din_run):
    running = RunningServer(din_run, max_request_rows=100, max_body_bytes=200_000)
    yield running.url
    running.stop()


def test_http_predict_health_metadata(server, din_run, tiny_data):
    rows = raw_rows(tiny_data, n=10)
    code, body = _request(server + "/predict", {"rows": rows})
    assert code == 200
    np.testing.assert_allclose(json.loads(body)["predictions"], Predictor(din_run).predict(rows), rtol=1e-6)
    assert _request(server + "/health") == (200, '{"status": "ok"}')
    meta = json.loads(_request(server + "/metadata")[1])
    assert meta["model"] == "din" and meta["depths"] is None and meta["schema"]["name"] == "amazon-electronics-x1"


@pytest.mark.parametrize("body,raw,code,fragment", [
    (None, b"{not json", 400, "malformed JSON"),
    ([1, 2], None, 400, "JSON object"),
    ({"rowz": []}, None, 400, "unknown key(s) ['rowz']"),
    ({"rows": []}, None, 400, "non-empty list"),
    ({"rows": [{"item_id": "1"}]}, None, 400, "missing field(s)"),
    ({"rows": [{"item_id": "1", "cate_id": "1", "item_history": "1", "cate_history": "1", "price": 3}]}, None,
     400, "unknown field(s) ['price']"),
    ({"rows": [{"item_id": [1], "cate_id": "1", "item_history": "1", "cate_history": "1"}]}, None,
     400, "rows[0].item_id must be a string"),
    ({"rows": [{"item_id": "1", "cate_id": "1", "item_history": "1^^2", "cate_history": "1"}]}, None,
     400, "empty or non-id token"),
    ({"rows": [{"item_id": "1", "cate_id": "1", "item_history": "1", "cate_history": "1"}], "depth": 2}, None,
     400, "has no loop depth"),
    ({"rows": [{"item_id": "1", "cate_id": "1", "item_history": "1", "cate_history": "1"}] * 101}, None,
     413, "limit is 100"),
    (None, b"x" * 300_000, 413, "exceeds"),
    (None, b"[" * 100_000, 400, "nested too deeply"),
    (None, b'{"rows": [{"item_id": ' + b"7" * 5000 + b"}]}", 400, "malformed JSON"),  # past int's digit limit
    ({"rows": [{"item_id": "1", "cate_id": "1", "item_history": "1^2^3", "cate_history": "1"}]}, None,
     400, "{'item_history': 3, 'cate_history': 1} events"),
])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, tiny_data, body, raw, code, fragment):
    status, text = _request(server + "/predict", body, raw)
    assert status == code and fragment in json.loads(text)["error"]
    assert _request(server + "/predict", {"rows": raw_rows(tiny_data, n=2)})[0] == 200


def predict_ok_count(server) -> int:
    prefix = 'loopctr_requests_total{path="/predict",code="200"} '
    lines = [line for line in _request(server + "/metrics")[1].splitlines() if line.startswith(prefix)]
    return int(lines[0][len(prefix):]) if lines else 0


def test_micro_batcher_scores_the_jobs_of_one_loop_turn_in_one_forward_per_depth():
    calls = []

    class Stub:  # predictions 10 x the input, so each job can check it got its own rows back
        def predict_columns(self, columns, depth=None):
            calls.append((list(columns["x"]), depth))
            return np.asarray(columns["x"], dtype=float) * 10

    async def submit_all():
        batcher = MicroBatcher(Stub(), ServeConfig(), Metrics())
        loop = asyncio.get_running_loop()
        jobs = [Job({"x": [i, i + 0.5]}, 2, None, loop.create_future()) for i in range(3)]
        jobs.append(Job({"x": [7]}, 1, 3, loop.create_future()))
        for job in jobs:
            batcher.submit(job)
        answers = await asyncio.gather(*(j.future for j in jobs))
        late = Job({"x": [9]}, 1, None, loop.create_future())  # after the batch: a batch of its own
        batcher.submit(late)
        return answers, await late.future

    answers, late = asyncio.run(submit_all())
    assert calls == [([0, 0.5, 1, 1.5, 2, 2.5], None), ([7], 3), ([9], None)]
    assert answers == [[0, 5], [10, 15], [20, 25], [70]] and late == [90]


def test_concurrent_requests_get_their_own_rows_back(server, din_run, tiny_data):
    rows = raw_rows(tiny_data, n=40)
    expected = Predictor(din_run).predict(rows)
    results = {}

    def call(i):
        results[i] = json.loads(_request(server + "/predict", {"rows": rows[i * 4:(i + 1) * 4]})[1])["predictions"]

    before = predict_ok_count(server)  # the server is shared by this module's tests
    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    np.testing.assert_allclose(sum((results[i] for i in range(10)), []), expected, rtol=1e-5, atol=1e-6)
    assert predict_ok_count(server) == before + 10


def test_kept_alive_connection_serves_good_bad_and_good_requests(server, din_run, tiny_data):
    import http.client

    host, port = server.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    rows = raw_rows(tiny_data, n=3)
    answers = []
    for body in ({"rows": rows}, {"rows": []}, {"rows": rows[:1]}):
        conn.request("POST", "/predict", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answers.append((resp.status, json.loads(resp.read())))
    conn.close()
    assert [code for code, _ in answers] == [200, 400, 200]
    expected = Predictor(din_run).predict(rows)
    np.testing.assert_allclose(answers[0][1]["predictions"], expected, rtol=1e-6)
    np.testing.assert_allclose(answers[2][1]["predictions"], expected[:1], rtol=1e-6)


def test_unknown_endpoint(server):
    assert _request(server + "/nope")[0] == 404
    assert _request(server + "/predict")[0] == 405  # GET
    metrics = _request(server + "/metrics")[1]
    assert 'loopctr_batch_seconds_count' in metrics and 'path="other",code="404"' in metrics and "/nope" not in metrics


def test_oversized_body_is_refused_before_reading_and_the_connection_closed(server):
    import http.client

    host, port = server.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", "300000")  # over max_body_bytes; the body is never sent
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and resp.getheader("connection") == "close"
    assert "exceeds" in json.loads(resp.read())["error"]
    conn.close()


def test_garbage_on_the_socket_gets_400_and_the_server_keeps_serving(server, tiny_data):
    import socket

    host, port = server.split("//")[1].split(":")
    for garbage in (b"\x00\xff not http at all\r\n\r\n", b"POST /predict HTTP/1.1\r\nContent-Length: zz\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(garbage)
            assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    assert _request(server + "/predict", {"rows": raw_rows(tiny_data, n=2)})[0] == 200


def test_head_answers_as_get_without_a_body(server):
    import http.client

    host, port = server.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("HEAD", "/metadata")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    assert int(resp.getheader("content-length")) == len(_request(server + "/metadata")[1].encode())
    conn.close()


def test_slow_senders_are_cut_off_and_the_connection_limit_holds(din_run, tiny_data):
    import socket

    running = RunningServer(din_run, header_timeout_s=0.5, body_timeout_s=0.5, max_connections=4)
    host, port = running.url.split("//")[1].split(":")
    try:
        silent = socket.create_connection((host, int(port)), timeout=10)  # opens and sends nothing
        slowloris = socket.create_connection((host, int(port)), timeout=10)
        slowloris.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        assert silent.recv(1024) == b"" and slowloris.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 5
        short = socket.create_connection((host, int(port)), timeout=10)
        short.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"rows\"")
        answer = short.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and b"the body did not arrive within 0.5s (7 of 100" in answer
        for sock in (silent, slowloris, short):
            sock.close()
        idle = []  # 3 kept-alive connections: with one more request, the 4 of max_connections are open
        for _ in range(3):  # each asks at once (a connection idle past header_timeout_s would be closed), is
            for _attempt in range(100):  # answered and kept alive; 503 while the server still drops the above
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = sock.recv(1024)
                if not answer.startswith(b"HTTP/1.1 503"):
                    break
                sock.close()
                time.sleep(0.05)
            assert answer.startswith(b"HTTP/1.1 200")
            idle.append(sock)
        assert _request(running.url + "/predict", {"rows": raw_rows(tiny_data, n=2)})[0] == 503
        for sock in idle:
            sock.close()
        for _ in range(100):  # the server sees the closes on its next loop turns
            if _request(running.url + "/predict", {"rows": raw_rows(tiny_data, n=2)})[0] == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not recover once the connections closed")
    finally:
        running.stop()


def test_large_bodies_are_parsed_in_a_worker_process_with_the_same_answers(din_run, tiny_data):
    running = RunningServer(din_run, max_request_rows=100, offload_bytes=1000)
    try:
        rows = raw_rows(tiny_data, n=30)
        assert len(json.dumps({"rows": rows})) > 1000
        code, text = _request(running.url + "/predict", {"rows": rows})
        assert code == 200
        np.testing.assert_allclose(json.loads(text)["predictions"], Predictor(din_run).predict(rows), rtol=1e-6)
        parsers = running.server.app._parsers
        assert parsers is not None  # the body went through the worker
        bad = {"rows": rows[:-1] + [{**rows[-1], "item_id": [1]}]}
        assert _request(running.url + "/predict", bad) == (400, json.dumps(
            {"error": "rows[29].item_id must be a string or an integer id, got [1]"}))
        status, text = _request(running.url + "/predict", raw=b"[" * 100_000)
        assert status == 400 and "nested too deeply" in json.loads(text)["error"]
        for process in list(parsers._processes.values()):  # a worker that dies: 503, then a new worker
            process.kill()
            process.join()
        assert _request(running.url + "/predict", {"rows": rows})[0] == 503
        code, text = _request(running.url + "/predict", {"rows": rows})
        assert code == 200 and running.server.app._parsers is not parsers
        assert _request(running.url + "/predict", {"rows": rows[:2]})[0] == 200  # small bodies: inline
    finally:
        running.stop()


def test_a_history_of_a_million_events_is_scored_from_its_newest_events(din_run, tiny_data):
    predictor = Predictor(din_run)
    keep = predictor.sequence_limit
    row = raw_rows(tiny_data, n=1)[0]
    newest = {name: row[name].split("^")[-3:] for name in ("item_history", "cate_history")}
    padded = lambda n: {**row, **{name: "^".join(["5"] * n + tokens) for name, tokens in newest.items()}}  # noqa: E731
    huge, kept = padded(1_000_000), padded(keep - 3)  # the model reads the newest `keep` events of both
    assert predictor.predict([huge]) == pytest.approx(predictor.predict([kept]), abs=1e-7)
    assert predictor.validate([huge])["item_history"][0] == kept["item_history"].split("^")


def test_a_slow_or_failing_model_gets_503_or_500_and_the_server_keeps_serving(din_run, tiny_data):
    # inline_rows=0: every batch goes to the model thread (a batch scored on the event loop cannot time out)
    running = RunningServer(din_run, request_timeout_s=0.3, inline_rows=0)
    predictor = running.server.app.predictor
    score = predictor.predict_columns
    rows = raw_rows(tiny_data, n=3)

    release, slow_done = threading.Event(), threading.Event()

    def slow(columns, depth=None):  # held until the test has its 503: no race with the time-out
        release.wait(30)
        slow_done.set()
        return score(columns, depth)

    def failing(columns, depth=None):
        raise RuntimeError("out of memory")

    try:
        predictor.predict_columns = slow
        code, text = _request(running.url + "/predict", {"rows": rows})
        assert code == 503 and "timed out after 0.3s" in json.loads(text)["error"]
        predictor.predict_columns = failing
        release.set()
        assert slow_done.wait(30)  # the slow batch ends (its request is gone) before the next one is scored
        code, text = _request(running.url + "/predict", {"rows": rows})
        assert code == 500 and json.loads(text)["error"] == "RuntimeError: out of memory"
        predictor.predict_columns = score
        code, text = _request(running.url + "/predict", {"rows": rows})
        assert code == 200
        np.testing.assert_allclose(json.loads(text)["predictions"], Predictor(din_run).predict(rows), rtol=1e-6)
    finally:
        running.stop()


def assert_export_matches_eager(run, export_dir, tiny_data, n: int, **forward_kwargs):
    """The TorchScript program of `export_dir` and the run's eager model give the same probabilities."""
    exported = torch.jit.load(str(export_dir / "model.pt"))
    predictor = Predictor(run)
    batch = predictor.encode(predictor.validate(raw_rows(tiny_data, n=n)))
    with torch.no_grad():
        eager = torch.sigmoid(predictor.model(batch, **forward_kwargs)["logits"])
    torch.testing.assert_close(exported(program_inputs(batch, predictor.schema)), eager, rtol=1e-5, atol=1e-6)


def test_torchscript_export_matches_eager(din_run, tiny_data):
    assert main(["export", "--run", str(din_run), "--format", "torchscript"]) == 0
    for n in (3, 40):  # other batch sizes and sequence widths than the traced example
        assert_export_matches_eager(din_run, din_run / "export-torchscript", tiny_data, n)
    assert {"model.pt", "schema.json", "vocab", "config.yaml", "export.json"} <= {
        p.name for p in (din_run / "export-torchscript").iterdir()}
    assert main(["export", "--run", str(din_run)]) == 2  # never overwrites


def test_onnx_export_matches_eager(din_run, tiny_data):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra (pip install -e .[onnx])")
    pytest.importorskip("onnx", reason="onnx is an optional extra (pip install -e .[onnx])")
    assert main(["export", "--run", str(din_run), "--format", "onnx"]) == 0
    session = ort.InferenceSession(str(din_run / "export-onnx" / "model.onnx"))
    predictor = Predictor(din_run)
    batch = predictor.encode(predictor.validate(raw_rows(tiny_data, n=17)))
    inputs = program_inputs(batch, predictor.schema)
    (onnx_out,) = session.run(None, {i.name: inputs[i.name].numpy() for i in session.get_inputs()})
    with torch.no_grad():
        eager = torch.sigmoid(predictor.model(batch)["logits"]).numpy()
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-4, atol=1e-5)


def train_small_loopctr(tiny_data, run, *settings) -> Path:
    args = ["train", "--data", str(tiny_data), "--model", "loopctr", "--out", str(run), "epochs=1", "batch_size=64",
            "threads=1", "embedding_dim=8", "d_model=16", "n_heads=2", "ffn_hidden=32", "head_hidden_units=[16]",
            "train_loops=3", "infer_loops=1", *settings]
    assert main(args) == 0
    return run


@pytest.fixture(scope="module")
def loop_run(tiny_data, tmp_path_factory):
    return train_small_loopctr(tiny_data, tmp_path_factory.mktemp("serve") / "loopctr")


def test_depth_knob_equals_per_depth_evaluation(loop_run, tiny_data):
    predictor = Predictor(loop_run)
    assert predictor.max_depth == 3 and predictor.metadata()["depths"] == [1, 2, 3]
    rows = raw_rows(tiny_data, n=30)
    arrays, _ = predict(predictor.model, BatchLoader(PreparedDataset(tiny_data).split("test"), 1000), DistEnv(),
                        depths=[1, 2, 3])
    for depth in (1, 2, 3):
        np.testing.assert_allclose(predictor.predict(rows, depth), arrays["preds_by_depth"][depth - 1][:30],
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.predict(rows), predictor.predict(rows, 1), rtol=1e-6)  # infer_loops=1
    from loopctr.serve.predictor import BadRequest

    for bad in (0, 4, "2", True):
        with pytest.raises(BadRequest, match="depth"):
            predictor.predict(rows, bad)


def test_large_requests_are_scored_in_length_sorted_chunks(loop_run, tiny_data):
    rows = raw_rows(tiny_data, n=40)
    whole = Predictor(loop_run, chunk_rows=0)
    chunked = Predictor(loop_run, chunk_rows=8)
    widths = []
    score = chunked._score
    chunked._score = lambda batch, depth: (widths.append(batch.jagged("item_history").width), score(batch, depth))[1]
    for depth in (1, 3):
        widths.clear()
        np.testing.assert_allclose(chunked.predict(rows, depth), whole.predict(rows, depth), rtol=1e-5, atol=1e-6)
        assert len(widths) == 5 and widths == sorted(widths) and widths[0] < widths[-1]  # shortest rows first
    assert len(Predictor(loop_run).predict(rows)) == 40  # default: 128 rows per chunk, one chunk here


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_directory_is_served_at_its_depth(loop_run, tiny_data, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX serving needs the optional extra: pip install -e .[onnx]")
    out = tmp_path / f"export-{fmt}"
    assert main(["export", "--run", str(loop_run), "--format", fmt, "--depth", "2", "--out", str(out)]) == 0
    rows = raw_rows(tiny_data, n=20)
    served = Predictor(out)
    np.testing.assert_allclose(served.predict(rows), Predictor(loop_run).predict(rows, 2), rtol=1e-5, atol=1e-6)
    for one in rows[:3]:  # a one-row batch has no padding (and takes the small-request encoding)
        np.testing.assert_allclose(served.predict([one]), Predictor(loop_run).predict([one], 2), rtol=1e-5, atol=1e-6)
    assert served.metadata()["export"] == {"format": fmt, "depth": 2} and served.metadata()["depths"] is None
    from loopctr.serve.predictor import BadRequest

    with pytest.raises(BadRequest, match="exported at depth 2"):
        served.predict(rows, 2)
    assert main(["export", "--run", str(out), "--out", str(tmp_path / "again")]) == 2  # not a run


def test_depth_speed_benchmark_times_every_depth(loop_run):
    depth_speed = load_script("depth_speed")
    model, batches, seen, baselines = depth_speed.load_batches(loop_run, "test", 64, 100, baselines=["dnn"])
    assert seen >= 100 and len(batches) == -(-seen // 64)
    assert baselines["dnn"].name == "dnn" and not baselines["dnn"].training
    speeds = depth_speed.samples_per_s(model, batches, seen, [1, 3], repeats=1, baselines=baselines)
    assert sorted(speeds, key=str) == [1, 3, "dnn"] and all(s > 0 for s in speeds.values())
    wider, _, _, none = depth_speed.load_batches(loop_run, "test", 64, 100, ["n_loop_layers=2"])
    assert wider.parameter_counts()["dense"] > model.parameter_counts()["dense"] and none == {}


def test_encode_speed_benchmark_times_both_paths(loop_run, tiny_data, tmp_path, monkeypatch, capsys):
    import csv

    rows = raw_rows(tiny_data, n=20)
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setattr("sys.argv", ["encode_speed", "--run", str(loop_run), "--csv", str(path), "--rows", "1,4",
                                     "--requests", "5", "--repeats", "1"])
    load_script("encode_speed").main()
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in table] == [1, 4] and all(float(v) > 0 for r in table for v in r[1:])


def test_serve_load_benchmark_reads_forward_passes_from_metrics(loop_run, tiny_data):
    serve_load = load_script("serve_load")
    running = RunningServer(loop_run)
    try:
        address = running.url.split("//")[1]
        r = serve_load.load(address, raw_rows(tiny_data, n=20), batch=5, depth=2, concurrency=2, requests=8,
                            seconds=float("inf"))  # bounded by the request count alone
        assert r["requests"] == 8 and r["rows_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert 5 <= r["rows_per_pass"] <= 10 and r["ms_per_pass"] > 0 and 0 < r["model_share"] <= 1
        assert serve_load.forward_totals(address)[1] == 8 * 5 + 5  # the warm-up request too
    finally:
        running.stop()


def test_export_with_normalised_embeddings_matches_eager(tiny_data, tmp_path):
    run = train_small_loopctr(tiny_data, tmp_path / "loopctr", "embedding_norm=true")
    assert main(["export", "--run", str(run)]) == 0
    assert_export_matches_eager(run, run / "export-torchscript", tiny_data, 25)


def test_export_at_a_depth_matches_eager(loop_run, tiny_data):
    assert main(["export", "--run", str(loop_run), "--depth", "2"]) == 0
    assert_export_matches_eager(loop_run, loop_run / "export-torchscript-depth2", tiny_data, 25, depths=[2])
    assert main(["export", "--run", str(loop_run), "--depth", "9"]) == 2


def test_a_model_with_generated_weights_trains_and_exports_exactly(tiny_data, tmp_path):
    run = tmp_path / "din-apg"
    settings = ["epochs=1", "batch_size=64", "threads=1", "embedding_dim=8", "dnn_hidden_units=[16]",
                "attention_hidden_units=[8]", "apg=mix", "apg_fields=[cate_id]", "apg_rank=4", "apg_overparam=6"]
    assert main(["train", "--data", str(tiny_data), "--model", "din", "--out", str(run), *settings]) == 0
    assert main(["export", "--run", str(run)]) == 0
    assert_export_matches_eager(run, run / "export-torchscript", tiny_data, 25)
