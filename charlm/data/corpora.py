"""Where text comes from: local files (plain or compressed) and named datasets downloaded on first use.

Files are read in one go (bytes once, decoded once) and decoded as strict UTF-8, so a bad byte is
reported with its offset instead of silently turning into a replacement character.

A download streams into a hidden temporary file beside its final place, hashing as it goes, and is
renamed into place only after its size and sha256 check out; any failure (HTTP error, refused
connection, time-out, wrong size or digest, Ctrl-C) removes the temporary file, so the cache never
holds a partial or wrong file.  ``CHARLM_MIRROR`` (or ``mirror=``) replaces the download base URL,
which is also how this code is tested, against a local HTTP server.

This module must not import TensorFlow (the CLI imports it for ``--help``-fast commands).
"""
from __future__ import annotations

import bz2
import difflib
import gzip
import hashlib
import http.client
import lzma
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CharlmError
from charlm.runtime import cache_home

MIRROR_ENV = "CHARLM_MIRROR"
DATA_DIR_ENV = "CHARLM_DATA_DIR"

_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Dataset:
    name: str               # "text8"
    filename: str           # file name under the base URL and in the cache folder
    url: str                # the official address
    size: int               # bytes of the downloaded file
    sha256: str | None      # of the downloaded file (not of the text inside); None = size check only
    description: str


# Digests of the downloaded files, each agreeing across several independent public sources:
#   text8.zip   a6640522...: pinned by many text8 loaders (e.g. a Haskell word2vec Setup.hs,
#               several Python text8 downloaders; one also pins the text's MD5 3bea1919...).
#   enwik8.zip  547994d9...: huggingface/datasets datasets/enwik8/dataset_infos.json
#               (download_checksums, 36445475 bytes), and others.
#   input.txt   86c4e6aa...: tensorflow/datasets tensorflow_datasets/datasets/tiny_shakespeare/
#               checksums.tsv (1115394 bytes), and others.
DATASETS: dict[str, Dataset] = {
    "text8": Dataset(
        "text8", "text8.zip", "http://mattmahoney.net/dc/text8.zip", 31_344_016,
        "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
        "100M characters of cleaned English Wikipedia, a-z and space (zip holding 'text8')"),
    "enwik8": Dataset(
        "enwik8", "enwik8.zip", "http://mattmahoney.net/dc/enwik8.zip", 36_445_475,
        "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
        "first 100M bytes of an English Wikipedia XML dump, Hutter prize (zip holding 'enwik8')"),
    "tinyshakespeare": Dataset(
        "tinyshakespeare", "input.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        1_115_394,
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "1.1M characters of Shakespeare (karpathy/char-rnn)"),
}


def _known() -> str:
    return ", ".join(DATASETS)


def _one_line(x) -> str:
    return " ".join(str(x).split())


def default_data_dir() -> Path:
    """$CHARLM_DATA_DIR; else, run from a source checkout (the folder holding ``pyproject.toml``),
    its ``datasets`` folder; else (charlm installed by pip) ``$XDG_CACHE_HOME/charlm/datasets``:
    never a folder inside site-packages."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]        # charlm/data/corpora.py
    if (checkout / "pyproject.toml").is_file():
        return checkout / "datasets"
    return Path(cache_home()) / "datasets"


def _dataset(name: str) -> Dataset:
    ds = DATASETS.get(name)
    if ds is None:
        raise CharlmError(f"unknown dataset {name!r}; known datasets: {_known()}")
    return ds


def dataset_path(name, data_dir=None) -> Path:
    """Where the cached download of dataset ``name`` lives (whether or not it is there yet)."""
    ds = _dataset(name)
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return base / ds.filename


# -- reading files ---------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if suffix == ".bz2":
            with bz2.open(path, "rb") as f:
                return f.read()
        if suffix in (".xz", ".lzma"):
            with lzma.open(path, "rb") as f:
                return f.read()
        if suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                members = [m for m in z.infolist() if not m.is_dir()]
                if len(members) != 1:
                    names = ", ".join(m.filename for m in members[:5]) + (", ..." if len(members) > 5 else "")
                    raise CharlmError(f"{path}: a .zip corpus must hold exactly one file, this one holds "
                                      f"{len(members)}" + (f" ({names})" if members else ""))
                return z.read(members[0])
        return path.read_bytes()
    except PermissionError:
        raise CharlmError(f"cannot read {path}: permission denied") from None
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, RuntimeError,
            NotImplementedError, ValueError) as e:
        # gzip.BadGzipFile and bz2's "Invalid data stream" are OSErrors, a truncated stream is an
        # EOFError, a bad deflate stream inside a zip is zlib.error, an encrypted zip a RuntimeError.
        raise CharlmError(f"{path}: corrupt or unreadable file ({type(e).__name__}: {_one_line(e)})") from None


def _decode(data: bytes, source) -> str:
    """Strict UTF-8 without copying the bytes; a leading BOM is dropped."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return str(memoryview(data)[skip:], "utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{source}: not valid UTF-8 at byte {e.start + skip} "
                          f"(byte 0x{data[e.start + skip]:02x})") from None


def read_text_file(path) -> str:
    """The text of a plain, .gz, .bz2, .xz or single-file .zip file, decoded as strict UTF-8."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CharlmError(f"corpus file not found: {path}")
    if path.is_dir():
        raise CharlmError(f"corpus path is a directory, not a file: {path}")
    data = _read_bytes(path)
    text = _decode(data, path)
    del data
    if not text:
        raise CharlmError(f"corpus is empty: {path}")
    return text


# -- downloads -------------------------------------------------------------------------------------
class _ProgressBar:
    """A download bar on stderr; on a non-terminal just a start and an end line."""

    def __init__(self, label: str, total: int, stream=None):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.last = 0.0
        self.drawn = False
        if not self.tty:
            self._write(f"{label} ({total / 1e6:.1f} MB) ...\n")

    def _write(self, s: str):
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def update(self, done: int):
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < self.total:
            return
        self.last, self.drawn = now, True
        width = 30
        frac = min(done / self.total, 1.0) if self.total else 0.0
        filled = int(width * frac)
        self._write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                    f"{done / 1e6:6.1f}/{self.total / 1e6:.1f} MB")

    def finish(self, ok: bool):
        if self.tty:
            if self.drawn:
                self._write("\n")
        elif ok:
            self._write(f"{self.label}: done\n")


def _base_url(ds: Dataset, mirror) -> str:
    base = mirror or os.environ.get(MIRROR_ENV) or ds.url.rsplit("/", 1)[0]
    base = str(base).strip()
    if "://" not in base:                      # a local folder used as a mirror
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/")


def _network_reason(e: BaseException, timeout: float) -> str:
    reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError) else e
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no response within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name: {_one_line(reason.strerror or reason)}"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return _one_line(reason.strerror)
    return _one_line(reason) or type(reason).__name__


def _advice() -> str:
    return f"check the network, set --mirror / {MIRROR_ENV}, or train on a local file with --corpus PATH"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_ok(ds: Dataset, target: Path) -> bool:
    try:
        if not target.is_file() or target.stat().st_size != ds.size:
            return False
        return ds.sha256 is None or _file_sha256(target) == ds.sha256
    except OSError:
        return False


def download(name: str, data_dir=None, mirror=None, progress: bool = True, timeout: float = 10.0) -> Path:
    """The cached file of dataset ``name``, downloading and checking it first if needed.

    The file is fetched from ``<base>/<filename>``, base being ``mirror``, else $CHARLM_MIRROR, else
    the official URL's folder (a mirror without ``scheme://`` is a local folder).  ``timeout`` bounds
    the connection and every read, so a dead or stalled server fails within seconds.
    """
    ds = _dataset(name)
    target = dataset_path(name, data_dir)
    if _cached_ok(ds, target):
        return target
    base = _base_url(ds, mirror)
    url = f"{base}/{ds.filename}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{ds.filename}.part-", dir=target.parent)
    except OSError as e:
        raise CharlmError(f"cannot write to the dataset folder {target.parent}: "
                          f"{_one_line(e.strerror or e)}") from None
    tmp = Path(tmp_name)
    bar = None
    ok = False
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "charlm (python urllib)"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    if length is not None and length.strip().isdigit() and int(length) != ds.size:
                        raise CharlmError(f"could not download {ds.name} from {url}: the server offers "
                                          f"{int(length):,} bytes, expected {ds.size:,} (wrong file or "
                                          f"mirror?); nothing was kept")
                    if progress:
                        bar = _ProgressBar(f"downloading {ds.name} from {url}", ds.size)
                    while True:
                        block = response.read(_CHUNK)
                        if not block:
                            break
                        size += len(block)
                        if size > ds.size:
                            raise CharlmError(f"the download of {ds.name} from {url} is larger than the "
                                              f"expected {ds.size:,} bytes; nothing was kept")
                        digest.update(block)
                        try:
                            out.write(block)
                        except OSError as e:
                            raise CharlmError(f"cannot write {tmp}: {_one_line(e.strerror or e)}") from None
                        if bar is not None:
                            bar.update(size)
            except urllib.error.HTTPError as e:
                raise CharlmError(f"could not download {ds.name} from {url} (HTTP {e.code} "
                                  f"{_one_line(e.reason)}); {_advice()}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                raise CharlmError(f"could not download {ds.name} from {url} "
                                  f"({_network_reason(e, timeout)}); {_advice()}") from None
            except ValueError as e:           # e.g. "unknown url type"
                raise CharlmError(f"cannot download {ds.name}: bad URL {url} ({_one_line(e)})") from None
            out.flush()
            os.fsync(out.fileno())
        if size != ds.size:
            raise CharlmError(f"the download of {ds.name} from {url} has {size:,} bytes, expected "
                              f"{ds.size:,}; nothing was kept (interrupted transfer or wrong file?)")
        got = digest.hexdigest()
        if ds.sha256 is not None and got != ds.sha256:
            raise CharlmError(f"the download of {ds.name} from {url} failed its sha256 checksum (got {got}, "
                              f"expected {ds.sha256}); nothing was kept")
        os.replace(tmp, target)
        ok = True
    except KeyboardInterrupt:
        raise CharlmError(f"the download of {ds.name} was interrupted; nothing was kept") from None
    except OSError as e:                      # fsync / replace
        raise CharlmError(f"cannot save {target}: {_one_line(e.strerror or e)}") from None
    finally:
        if bar is not None:
            bar.finish(ok)
        if not ok:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
    return target


# -- corpora ---------------------------------------------------------------------------------------
def _dataset_name(spec) -> str | None:
    s = str(spec).strip()
    if s in DATASETS:
        return s
    return s.lower() if s.lower() in DATASETS else None


def load_corpus(spec: str, data_dir=None, mirror=None, progress: bool = True) -> str:
    """The text of a corpus: an existing file path, else the name of a dataset (downloaded on first use)."""
    path = Path(str(spec)).expanduser()
    if str(spec) and path.exists():
        return read_text_file(path)
    name = _dataset_name(spec)
    if name is not None:
        return read_text_file(download(name, data_dir=data_dir, mirror=mirror, progress=progress))
    s = str(spec)
    if any(sep in s for sep in ("/", "\\", os.sep)) or s.startswith(("~", ".")) or path.suffix:
        raise CharlmError(f"corpus file not found: {path} (and it is not a dataset name: {_known()})")
    close = difflib.get_close_matches(s.lower(), DATASETS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise CharlmError(f"no such corpus file or dataset: {spec} (datasets: {_known()}){hint}")


def describe_corpus(spec) -> str:
    """A short label for logs: the dataset name, or the file path."""
    path = Path(str(spec)).expanduser()
    if str(spec) and path.exists():
        return str(path)
    return _dataset_name(spec) or str(spec)
