"""charlm.data.corpora: corpus files and archives, and the real download code against local servers.

Every server here is a real socket on 127.0.0.1 (port 0) in a thread; nothing leaves the machine.
"""
import bz2
import gzip
import hashlib
import http.server
import io
import lzma
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from charlm.data import corpora
from charlm.data.corpora import (DATA_DIR_ENV, DATASETS, MIRROR_ENV, Dataset, dataset_path, default_data_dir,
                            describe_corpus, download, load_corpus, read_text_file)
from charlm.errors import CharlmError

TEXT = "the quick brown fox — jumps over the lazy dog\nÆsop's fables, naïve café 😀\n" * 40


# -- reading files -----------------------------------------------------------------------------------
def _zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


WRITERS = {
    ".txt": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zip": lambda b: _zip_bytes({"inner.txt": b}),
}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_every_format_round_trips(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(WRITERS[suffix](TEXT.encode("utf-8")))
    assert read_text_file(path) == TEXT
    assert read_text_file(str(path)) == TEXT          # str paths too


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_bom_is_stripped(tmp_path, suffix):
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(WRITERS[suffix](b"\xef\xbb\xbf" + TEXT.encode("utf-8")))
    assert read_text_file(path) == TEXT


def test_suffix_is_case_insensitive(tmp_path):
    path = tmp_path / "CORPUS.GZ"
    path.write_bytes(gzip.compress(TEXT.encode()))
    assert read_text_file(path) == TEXT


def test_zip_ignores_directory_entries(tmp_path):
    path = tmp_path / "dir.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("folder/", b"")
        z.writestr("folder/text.txt", TEXT.encode())
    assert read_text_file(path) == TEXT


@pytest.mark.parametrize("members,count", [({"a.txt": "a", "b.txt": "b"}, 2), ({}, 0)])
def test_zip_must_hold_exactly_one_file(tmp_path, members, count):
    path = tmp_path / "many.zip"
    path.write_bytes(_zip_bytes(members))
    with pytest.raises(CharlmError, match=f"exactly one file, this one holds {count}") as e:
        read_text_file(path)
    if count:
        assert "a.txt" in str(e.value) and "b.txt" in str(e.value)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(CharlmError, match="corpus file not found: .*missing.txt"):
        read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CharlmError, match="corpus file is empty: .*empty.txt"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "bom-only.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf"))
    with pytest.raises(CharlmError, match="corpus file is empty"):
        read_text_file(tmp_path / "bom-only.gz")
    with pytest.raises(CharlmError, match="directory"):
        read_text_file(tmp_path)


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_undecodable_bytes_name_file_and_offset(tmp_path, suffix):
    good = "héllo wörld ".encode("utf-8") * 100            # multi-byte characters before the bad byte
    data = good + b"\xff\xfe tail"
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(WRITERS[suffix](data))
    with pytest.raises(CharlmError) as e:
        read_text_file(path)
    msg = str(e.value)
    assert str(path) in msg and f"not valid UTF-8 at byte {len(good)}" in msg and "\n" not in msg


def test_undecodable_offset_counts_the_bom(tmp_path):
    path = tmp_path / "bom-bad.txt"
    path.write_bytes(b"\xef\xbb\xbfabc\x80")
    with pytest.raises(CharlmError, match="at byte 6"):
        read_text_file(path)


def test_truncated_multibyte_character_at_the_end(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("abc€".encode()[:-1])
    with pytest.raises(CharlmError, match="at byte 3"):
        read_text_file(path)


@pytest.mark.parametrize("name,data", [     # mtime=0: every xdist worker must collect the same ids
    ("corrupt.gz", b"not gzip at all"),
    ("truncated.gz", gzip.compress(TEXT.encode(), mtime=0)[:40]),
    ("corrupt.bz2", b"BZh9 definitely not bzip2"),
    ("corrupt.xz", b"\xfd7zXZ\x00 garbage"),
    ("corrupt.zip", b"PK\x03\x04 not really a zip"),
    ("plain.zip", b"just text with a .zip name"),
])
def test_corrupt_archives_are_one_line_errors(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CharlmError, match="corrupt or unreadable") as e:
        read_text_file(path)
    assert name in str(e.value) and "\n" not in str(e.value)


def test_zip_with_damaged_member_data(tmp_path):
    body = bytearray(_zip_bytes({"t.txt": TEXT.encode() * 20}))
    body[60] ^= 0xFF                                        # inside the compressed member data
    path = tmp_path / "damaged.zip"
    path.write_bytes(bytes(body))
    with pytest.raises(CharlmError, match="corrupt or unreadable"):
        read_text_file(path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("x")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_bytes", denied)       # chmod 0 would not stop root
    with pytest.raises(CharlmError, match="cannot read .*secret.txt: permission denied"):
        read_text_file(path)


# -- datasets table, paths, labels ---------------------------------------------------------------------
def test_real_dataset_table():
    assert set(DATASETS) == {"text8", "enwik8", "tinyshakespeare"}
    assert DATASETS["text8"].size == 31_344_016 and DATASETS["text8"].filename == "text8.zip"
    assert DATASETS["enwik8"].size == 36_445_475 and DATASETS["enwik8"].filename == "enwik8.zip"
    assert DATASETS["tinyshakespeare"].size == 1_115_394
    for name, ds in DATASETS.items():
        assert ds.name == name and ds.url.endswith("/" + ds.filename) and ds.description
        assert ds.sha256 is None or (len(ds.sha256) == 64 and int(ds.sha256, 16) >= 0)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    checkout = Path(corpora.__file__).resolve().parents[2]
    assert (checkout / "pyproject.toml").is_file()
    assert default_data_dir() == checkout / "datasets"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache"
    assert dataset_path("text8") == tmp_path / "cache" / "text8.zip"
    assert dataset_path("text8", tmp_path) == tmp_path / "text8.zip"


def test_installed_charlm_keeps_datasets_in_its_cache(tmp_path):
    """Installed by pip (no pyproject.toml beside the package), datasets go to the user's cache,
    never into site-packages."""
    site = tmp_path / "site-packages"
    shutil.copytree(Path(corpora.__file__).parents[1], site / "charlm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != DATA_DIR_ENV}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", "from charlm.data.corpora import default_data_dir; "
                          "print(default_data_dir())"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == str(tmp_path / "cache" / "charlm" / "datasets"), out.stderr


def test_unknown_names(tmp_path):
    with pytest.raises(CharlmError, match="unknown dataset 'nope'.*text8, enwik8, tinyshakespeare"):
        download("nope", data_dir=tmp_path)
    with pytest.raises(CharlmError, match="unknown dataset"):
        dataset_path("nope")
    with pytest.raises(CharlmError, match=r"no such corpus file or dataset: nonsense-name "
                                          r"\(datasets: text8, enwik8, tinyshakespeare\)"):
        load_corpus("nonsense-name", data_dir=tmp_path)
    with pytest.raises(CharlmError, match="did you mean text8"):
        load_corpus("text9", data_dir=tmp_path)
    with pytest.raises(CharlmError, match="corpus file not found: .*missing.txt .*not a dataset name"):
        load_corpus(str(tmp_path / "missing.txt"), data_dir=tmp_path)
    with pytest.raises(CharlmError, match="corpus file not found: input.txt"):
        load_corpus("input.txt", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_corpus_reads_files_and_describe(tmp_path):
    path = tmp_path / "c.txt.gz"
    path.write_bytes(gzip.compress(TEXT.encode()))
    assert load_corpus(str(path)) == TEXT
    assert describe_corpus(str(path)) == str(path)
    assert describe_corpus("text8") == "text8"
    assert describe_corpus("TinyShakespeare") == "tinyshakespeare"


# -- a real local HTTP server ----------------------------------------------------------------------------
class Server:
    """ThreadingHTTPServer on 127.0.0.1 serving a dict of files and counting requests.

    ``lie_length`` sends a wrong Content-Length header; ``no_length`` sends none (close-delimited);
    ``stall_after`` sends headers and that many body bytes, then hangs.
    """

    def __init__(self, files, no_length=False, stall_after=None):
        self.files, self.requests = files, []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if not no_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if stall_after is not None:
                    self.wfile.write(body[:stall_after])
                    self.wfile.flush()
                    outer.release.wait(10)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files, **kw):
        servers.append(Server(files, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _register(monkeypatch, name, filename, body):
    ds = Dataset(name, filename, f"http://example.invalid/dc/{filename}", len(body),
                 hashlib.sha256(body).hexdigest(), "a fake dataset for tests")
    monkeypatch.setitem(DATASETS, name, ds)
    return ds


@pytest.fixture
def fake(monkeypatch):
    """A zip-packaged fake dataset, like text8."""
    body = _zip_bytes({"fake": TEXT.encode()})
    return _register(monkeypatch, "fake", "fake.zip", body), body


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for var in (MIRROR_ENV, DATA_DIR_ENV, "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)   # 127.0.0.1 must not go through a proxy


def closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                           # nothing listens there now
    return f"http://127.0.0.1:{port}"


def leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_then_reuse_without_network(tmp_path, fake, serve):
    ds, body = fake
    server = serve({"fake.zip": body})
    data_dir = tmp_path / "new" / "cache"                  # created on demand
    path = download("fake", data_dir=data_dir, mirror=server.url, progress=False)
    assert path == data_dir / "fake.zip" == dataset_path("fake", data_dir)
    assert path.read_bytes() == body and path.stat().st_size == ds.size
    assert leftovers(data_dir) == ["fake.zip"] and server.requests == ["/fake.zip"]
    # cached: no request, and no network needed at all
    assert download("fake", data_dir=data_dir, mirror=server.url, progress=False) == path
    assert download("fake", data_dir=data_dir, mirror=closed_port_url(), progress=False) == path
    assert load_corpus("fake", data_dir=data_dir, mirror=server.url) == TEXT
    assert len(server.requests) == 1


def test_load_corpus_downloads_a_zip_dataset_and_reads_its_member(tmp_path, fake, serve, capsys):
    _, body = fake
    server = serve({"fake.zip": body})
    assert load_corpus("fake", data_dir=tmp_path, mirror=server.url, progress=True) == TEXT
    out, err = capsys.readouterr()
    assert out == "" and "fake" in err                     # progress goes to stderr only
    assert describe_corpus("fake") == "fake"


def test_plain_text_dataset(tmp_path, monkeypatch, serve):
    body = ("\ufeff" + TEXT).encode()
    _register(monkeypatch, "plain", "input.txt", body)
    server = serve({"input.txt": body})
    assert load_corpus("plain", data_dir=tmp_path, mirror=server.url, progress=False) == TEXT


def test_mirror_from_environment(tmp_path, fake, serve, monkeypatch):
    _, body = fake
    server = serve({"fake.zip": body})
    monkeypatch.setenv(MIRROR_ENV, server.url + "/")       # a trailing slash is fine
    assert download("fake", data_dir=tmp_path, progress=False).read_bytes() == body
    assert server.requests == ["/fake.zip"]


def test_mirror_argument_beats_environment(tmp_path, fake, serve, monkeypatch):
    _, body = fake
    server = serve({"fake.zip": body})
    monkeypatch.setenv(MIRROR_ENV, closed_port_url())
    assert download("fake", data_dir=tmp_path, mirror=server.url, progress=False).read_bytes() == body


def test_mirror_in_a_subfolder_and_data_dir_from_environment(tmp_path, fake, serve, monkeypatch):
    _, body = fake
    server = serve({"pub/corpora/fake.zip": body})
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "envcache"))
    path = download("fake", mirror=server.url + "/pub/corpora", progress=False)
    assert path == tmp_path / "envcache" / "fake.zip" and path.read_bytes() == body


def test_local_folder_as_mirror(tmp_path, fake):
    _, body = fake
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "fake.zip").write_bytes(body)
    path = download("fake", data_dir=tmp_path / "cache", mirror=str(tmp_path / "share"), progress=False)
    assert path.read_bytes() == body


def test_wrong_hash_leaves_nothing(tmp_path, fake, serve):
    _, body = fake
    forged = bytearray(body)
    forged[-30] ^= 0xFF                                    # same size, different bytes
    server = serve({"fake.zip": bytes(forged)})
    with pytest.raises(CharlmError, match="sha256 checksum") as e:
        download("fake", data_dir=tmp_path, mirror=server.url, progress=False)
    assert "nothing was kept" in str(e.value)
    assert leftovers(tmp_path) == []                       # neither the file nor a .part file


def test_corrupt_cache_is_replaced(tmp_path, fake, serve):
    _, body = fake
    server = serve({"fake.zip": body})
    (tmp_path / "fake.zip").write_bytes(b"\0" * len(body))  # right size, wrong content
    assert download("fake", data_dir=tmp_path, mirror=server.url, progress=False).read_bytes() == body
    assert len(server.requests) == 1 and leftovers(tmp_path) == ["fake.zip"]


@pytest.mark.parametrize("served,kw,words", [
    (b"x" * 10, {}, "offers 10 bytes, expected"),                 # Content-Length says wrong size
    (b"x" * 10, {"no_length": True}, "has 10 bytes, expected"),  # no header: short body
    (None, {"no_length": True}, "larger than the expected"),      # no header: too long a body
])
def test_wrong_size_leaves_nothing(tmp_path, fake, serve, served, kw, words):
    _, body = fake
    server = serve({"fake.zip": served if served is not None else body + b"extra" * 100_000}, **kw)
    with pytest.raises(CharlmError, match=words):
        download("fake", data_dir=tmp_path, mirror=server.url, progress=False)
    assert leftovers(tmp_path) == []


def test_404_names_the_url_and_leaves_nothing(tmp_path, fake, serve):
    server = serve({})
    with pytest.raises(CharlmError) as e:
        download("fake", data_dir=tmp_path, mirror=server.url, progress=False)
    msg = str(e.value)
    assert f"{server.url}/fake.zip" in msg and "HTTP 404" in msg and "--corpus PATH" in msg
    assert "\n" not in msg and leftovers(tmp_path) == []


def test_connection_refused_fails_fast_and_suggests_corpus(tmp_path, fake):
    start = time.monotonic()
    with pytest.raises(CharlmError, match="connection refused.*--corpus PATH"):
        download("fake", data_dir=tmp_path, mirror=closed_port_url(), progress=False)
    assert time.monotonic() - start < 5 and leftovers(tmp_path) == []


def test_dns_failure_message(tmp_path, fake, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(CharlmError, match="cannot resolve the host name.*CHARLM_MIRROR.*--corpus PATH"):
        download("fake", data_dir=tmp_path, mirror="http://no-such-host.invalid", progress=False)
    assert leftovers(tmp_path) == []


def test_server_that_accepts_but_never_answers(tmp_path, fake):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])         # accept, read nothing, say nothing
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(CharlmError, match=r"no response within 1 s.*--corpus PATH"):
            download("fake", data_dir=tmp_path, mirror=f"http://127.0.0.1:{listener.getsockname()[1]}",
                     progress=False, timeout=1)
        assert time.monotonic() - start < 4 and leftovers(tmp_path) == []
        assert held                                        # it really did accept
    finally:
        stop.set()
        thread.join(2)
        for s in held:
            s.close()
        listener.close()


def test_server_that_stalls_mid_body(tmp_path, fake, serve):
    _, body = fake
    server = serve({"fake.zip": body}, stall_after=len(body) // 2)
    start = time.monotonic()
    with pytest.raises(CharlmError, match="--corpus PATH"):
        download("fake", data_dir=tmp_path, mirror=server.url, progress=False, timeout=1)
    assert time.monotonic() - start < 4 and leftovers(tmp_path) == []


def test_interrupt_leaves_nothing(tmp_path, fake, serve, monkeypatch):
    _, body = fake
    server = serve({"fake.zip": body})

    def interrupt(self, done):
        raise KeyboardInterrupt
    monkeypatch.setattr(corpora._ProgressBar, "update", interrupt)
    monkeypatch.setattr(corpora._ProgressBar, "__init__",
                        lambda self, label, total, stream=None: setattr(self, "tty", True))
    monkeypatch.setattr(corpora._ProgressBar, "finish", lambda self, ok: None)
    with pytest.raises(CharlmError, match="interrupted; nothing was kept"):
        download("fake", data_dir=tmp_path, mirror=server.url, progress=True)
    assert leftovers(tmp_path) == []


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    stream = Tty()
    bar = corpora._ProgressBar("downloading x", 1000, stream=stream)
    bar.update(500)
    bar.update(1000)
    bar.finish(True)
    out = stream.getvalue()
    assert out.startswith("\rdownloading x [") and "1000" not in out.split("]")[0] and out.endswith("\n")


def test_bad_mirror_url(tmp_path, fake):
    with pytest.raises(CharlmError, match="fake") as e:
        download("fake", data_dir=tmp_path, mirror="ftp2://nowhere", progress=False)
    assert "\n" not in str(e.value) and leftovers(tmp_path) == []


def test_data_dir_that_is_a_file(tmp_path, fake):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CharlmError, match="dataset folder"):
        download("fake", data_dir=blocker, mirror="http://127.0.0.1:9", progress=False)


def test_datasets_commands(tmp_path, fake, serve):
    """`cli.py datasets download/list` over the same download code, as a user runs them."""
    from click.testing import CliRunner

    from cli import main

    _, body = fake
    server = serve({"fake.zip": body})
    r = CliRunner().invoke(main, ["datasets", "download", "fake", "--data-dir", str(tmp_path),
                                  "--mirror", server.url])
    assert r.exit_code == 0 and r.stdout.strip().endswith("fake.zip")
    listing = CliRunner().invoke(main, ["datasets", "list"])
    assert "text8" in listing.stdout and "31,344,016" in listing.stdout
    bad = CliRunner().invoke(main, ["datasets", "download", "nope"])
    assert bad.exit_code == 1 and "unknown dataset" in bad.output
