"""Downloads against an HTTP server started here on 127.0.0.1 (never the internet): Range resume, md5."""

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from loopctr.cli.main import main
from loopctr.data.download import download, download_dataset
from loopctr.errors import UserError


class Server:
    """Serves `files` (name -> bytes) with Range support; `cut` makes the first response stop early."""

    def __init__(self, files, honour_range=True, cut=None):
        self.files, self.honour_range, self.cut = files, honour_range, cut
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut is not None:
                    payload, server.cut = payload[:server.cut], None  # drop the connection mid-way, once
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


quiet = dict(progress=False, log=lambda *a: None)
BODY = bytes(range(256)) * 4000  # ~1 MB


def md5(data):
    return hashlib.md5(data).hexdigest()


def test_interrupted_download_resumes_with_range(tmp_path):
    with Server({"f.bin": BODY}, cut=300_000) as server:
        with pytest.raises(UserError, match="re-run to resume"):
            download(f"{server.url}/f.bin", tmp_path / "f.bin", md5=md5(BODY), **quiet)
        part = tmp_path / "f.bin.part"
        assert part.stat().st_size == 300_000 and not (tmp_path / "f.bin").exists()
        download(f"{server.url}/f.bin", tmp_path / "f.bin", md5=md5(BODY), **quiet)
        assert server.requests[-1] == ("f.bin", "bytes=300000-")
    assert (tmp_path / "f.bin").read_bytes() == BODY and not part.exists()


def test_server_ignoring_range_restarts_the_part(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    with Server({"f.bin": BODY}, honour_range=False) as server:
        download(f"{server.url}/f.bin", tmp_path / "f.bin", md5=md5(BODY), **quiet)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_checksum_mismatch_leaves_nothing(tmp_path):
    with Server({"f.bin": BODY}) as server:
        with pytest.raises(UserError, match="checksum mismatch after download: md5 .*, expected 0{32}"):
            download(f"{server.url}/f.bin", tmp_path / "f.bin", md5="0" * 32, **quiet)
        with pytest.raises(UserError, match="HTTP 404"):
            download(f"{server.url}/missing.bin", tmp_path / "m.bin", **quiet)
    assert list(tmp_path.iterdir()) == []


def archive(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"Toy_x1/{name}", data)
    return buf.getvalue()


def entry_yaml(tmp_path, url, md5s):
    path = tmp_path / "toy.yaml"
    path.write_text(
        "name: toy\nlabel: label\nsplits: {train: train.csv, test: test.csv}\n"
        "fields:\n  - {name: item, type: categorical}\n"
        f"download:\n  files:\n    - {{name: Toy_x1.zip, url: '{url}/Toy_x1.zip', extract: zip}}\n"
        "  md5: {" + ", ".join(f"{k}: {v}" for k, v in md5s.items()) + "}\n")
    return path


def test_dataset_download_extracts_and_verifies(tmp_path, capsys):
    train, test = b"label,item\n1,a\n0,b\n", b"label,item\n1,a\n"
    with Server({"Toy_x1.zip": archive({"train.csv": train, "test.csv": test})}) as server:
        spec = entry_yaml(tmp_path, server.url, {"train.csv": md5(train), "test.csv": md5(test)})
        out = tmp_path / "data"
        assert main(["data", "download", str(spec), "--out", str(out), "--quiet"]) == 0
        assert (out / "train.csv").read_bytes() == train and (out / "test.csv").read_bytes() == test
        assert "next: loopctr prepare" in capsys.readouterr().out
        n = len(server.requests)
        download_dataset(str(spec), out, **quiet)  # verified files already there: nothing fetched
        assert len(server.requests) == n
        # the same archive behind a mirror URL, with a wrong md5 in the entry: nothing is left behind
        bad = entry_yaml(tmp_path, "http://127.0.0.1:9/none", {"train.csv": "f" * 32, "test.csv": md5(test)})
        with pytest.raises(UserError, match="checksum mismatch for train.csv"):
            download_dataset(str(bad), tmp_path / "bad", mirror=server.url, **quiet)
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == []


def test_entries_without_a_public_url_say_where_to_get_them(tmp_path):
    with pytest.raises(UserError, match="no public download URL"):
        download_dataset("avazu", tmp_path, **quiet)
