"""Corpus files and the real download code, against a local HTTP server on 127.0.0.1."""
import bz2
import gzip
import hashlib
import http.server
import io
import lzma
import socket
import threading
import time
import zipfile

import pytest

from charlm import corpora
from charlm.corpora import Dataset, download, load_corpus, read_text_file
from charlm.errors import CharlmError

TEXT = "the quick brown fox — jumps\n" * 50


@pytest.mark.parametrize("suffix,writer", [
    (".txt", lambda p, b: p.write_bytes(b)),
    (".gz", lambda p, b: p.write_bytes(gzip.compress(b))),
    (".bz2", lambda p, b: p.write_bytes(bz2.compress(b))),
    (".xz", lambda p, b: p.write_bytes(lzma.compress(b))),
    (".zip", lambda p, b: zipfile.ZipFile(p, "w").writestr("inner.txt", b)),
])
def test_every_format_reads_back(tmp_path, suffix, writer):
    path = tmp_path / f"corpus{suffix}"
    writer(path, ("\ufeff" + TEXT).encode("utf-8"))
    assert read_text_file(path) == TEXT


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bad.txt").write_bytes(b"abc\xff\xfedef")
    (tmp_path / "corrupt.gz").write_bytes(b"not gzip at all")
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.txt", "a")
        z.writestr("b.txt", "b")
    for name, words in [("missing.txt", "not found"), ("empty.txt", "empty"), ("bad.txt", "byte 3"),
                        ("corrupt.gz", "corrupt"), ("two.zip", "holds 2"), (".", "directory")]:
        with pytest.raises(CharlmError, match=words):
            read_text_file(tmp_path / name)
    with pytest.raises(CharlmError, match="no such corpus file or dataset"):
        load_corpus("nonsense-name")


class Server:
    """A real HTTP server in a thread, serving files from a dict, counting requests."""

    def __init__(self, files, stall=False):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if stall:
                    time.sleep(5)
                    return
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def zipped(text: str, member: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(member, text)
    return buf.getvalue()


@pytest.fixture
def fake_dataset(monkeypatch):
    body = zipped(TEXT, "fake")
    ds = Dataset("fake", "fake.zip", "http://example.invalid/dc/fake.zip", len(body),
                 hashlib.sha256(body).hexdigest(), "test")
    monkeypatch.setitem(corpora.DATASETS, "fake", ds)
    return ds, body


def leftovers(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_download_checks_and_reuses(tmp_path, fake_dataset):
    ds, body = fake_dataset
    server = Server({"fake.zip": body})
    try:
        path = download("fake", data_dir=tmp_path, mirror=server.url, progress=False)
        assert path.read_bytes() == body and leftovers(tmp_path) == ["fake.zip"]
        assert load_corpus("fake", data_dir=tmp_path, mirror=server.url) == TEXT
        assert len(server.requests) == 1          # the second use read the cache
    finally:
        server.close()


def test_mirror_from_environment(tmp_path, fake_dataset, monkeypatch):
    _, body = fake_dataset
    server = Server({"fake.zip": body})
    monkeypatch.setenv(corpora.MIRROR_ENV, server.url)
    try:
        assert download("fake", data_dir=tmp_path, progress=False).read_bytes() == body
    finally:
        server.close()


@pytest.mark.parametrize("served,words", [
    ({"fake.zip": b"x" * 10}, "bytes, expected"),          # wrong size
    ({}, "HTTP 404"),
])
def test_failed_downloads_leave_nothing(tmp_path, fake_dataset, served, words):
    server = Server(served)
    try:
        with pytest.raises(CharlmError, match=words):
            download("fake", data_dir=tmp_path, mirror=server.url, progress=False)
        assert leftovers(tmp_path) == []
    finally:
        server.close()


def test_wrong_checksum_leaves_nothing(tmp_path, fake_dataset, monkeypatch):
    ds, body = fake_dataset
    forged = bytearray(body)
    forged[-30] ^= 0xFF
    server = Server({"fake.zip": bytes(forged)})
    try:
        with pytest.raises(CharlmError, match="checksum"):
            download("fake", data_dir=tmp_path, mirror=server.url, progress=False)
        assert leftovers(tmp_path) == []
    finally:
        server.close()


def test_no_network_fails_fast_and_suggests_corpus(tmp_path, fake_dataset):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                   # nothing listens there now
    start = time.monotonic()
    with pytest.raises(CharlmError, match="--corpus PATH"):
        download("fake", data_dir=tmp_path, mirror=f"http://127.0.0.1:{port}", progress=False)
    assert time.monotonic() - start < 5 and leftovers(tmp_path) == []


def test_stalled_server_times_out(tmp_path, fake_dataset):
    server = Server({}, stall=True)
    try:
        start = time.monotonic()
        with pytest.raises(CharlmError, match="--corpus PATH"):
            download("fake", data_dir=tmp_path, mirror=server.url, progress=False, timeout=1)
        assert time.monotonic() - start < 4
    finally:
        server.close()


def test_datasets_cli(tmp_path, fake_dataset):
    from click.testing import CliRunner

    from cli import main

    _, body = fake_dataset
    server = Server({"fake.zip": body})
    try:
        r = CliRunner().invoke(main, ["datasets", "download", "fake", "--data-dir", str(tmp_path),
                                      "--mirror", server.url])
        assert r.exit_code == 0 and r.stdout.strip().endswith("fake.zip")
        listing = CliRunner().invoke(main, ["datasets", "list"])
        assert "text8" in listing.stdout and "31,344,016" in listing.stdout
        bad = CliRunner().invoke(main, ["datasets", "download", "nope"])
        assert bad.exit_code == 1 and "unknown dataset" in bad.output
    finally:
        server.close()
