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
import codecs
import contextlib
import difflib
import glob
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
@contextlib.contextmanager
def _reading(path: Path):
    """Any failure opening or reading ``path`` (also halfway through a stream) as one line."""
    try:
        yield
    except CharlmError:
        raise
    except PermissionError:
        raise CharlmError(f"cannot read {path}: permission denied") from None
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, RuntimeError,
            NotImplementedError, ValueError) as e:
        # gzip.BadGzipFile and bz2's "Invalid data stream" are OSErrors, a truncated stream is an
        # EOFError, a bad deflate stream inside a zip is zlib.error, an encrypted zip a RuntimeError.
        raise CharlmError(f"{path}: corrupt or unreadable file ({type(e).__name__}: {_one_line(e)})") from None


class _Counting:
    """A raw file that counts (and optionally hashes) the bytes read through it: the progress of a
    compressed file is its position on disk, and its hash is that of the file as it is stored."""

    def __init__(self, raw, digest=None):
        self.raw, self.digest, self.done = raw, digest, 0

    def read(self, n=-1):
        block = self.raw.read(n)
        self.done += len(block)
        if self.digest is not None:
            self.digest.update(block)
        return block

    def readinto(self, buffer):
        n = self.raw.readinto(buffer)
        self.done += n or 0
        if self.digest is not None and n:
            self.digest.update(memoryview(buffer)[:n])
        return n

    def __getattr__(self, name):          # seek/tell/close for the decompressors
        return getattr(self.raw, name)


@contextlib.contextmanager
def open_binary(path, digest=None):
    """``(stream of the decompressed bytes, counter of the bytes read from disk)`` of a plain,
    .gz, .bz2, .xz or single-file .zip file; errors (also while reading) are one-line CharlmErrors.
    ``digest`` (a hashlib object) is fed the stored bytes, except for a .zip (hashed apart:
    zipfile seeks)."""
    path = Path(path)
    suffix = path.suffix.lower()
    with _reading(path), contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb", buffering=0))
        counter = _Counting(raw, None if suffix == ".zip" else digest)
        if suffix == ".gz":
            stream = stack.enter_context(gzip.GzipFile(fileobj=counter, mode="rb"))
        elif suffix == ".bz2":
            stream = stack.enter_context(bz2.BZ2File(counter, "rb"))
        elif suffix in (".xz", ".lzma"):
            stream = stack.enter_context(lzma.LZMAFile(counter, "rb"))
        elif suffix == ".zip":
            if digest is not None:
                _hash_into(path, digest)
            z = stack.enter_context(zipfile.ZipFile(counter))
            members = [m for m in z.infolist() if not m.is_dir()]
            if len(members) != 1:
                names = ", ".join(m.filename for m in members[:5]) + (", ..." if len(members) > 5 else "")
                raise CharlmError(f"{path}: a .zip corpus must hold exactly one file, this one holds "
                                  f"{len(members)}" + (f" ({names})" if members else ""))
            stream = stack.enter_context(z.open(members[0]))
        else:
            stream = counter
        yield stream, counter


def _hash_into(path: Path, digest):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def _read_bytes(path: Path) -> bytes:
    if path.suffix.lower() not in (".gz", ".bz2", ".xz", ".lzma", ".zip"):
        with _reading(path):
            return path.read_bytes()          # in one go, without a stream's copies
    with open_binary(path) as (stream, _):
        return stream.read()


def _decode(data: bytes, source) -> str:
    """Strict UTF-8 without copying the bytes; a leading BOM is dropped."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return str(memoryview(data)[skip:], "utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{source}: not valid UTF-8 at byte {e.start + skip} "
                          f"(byte 0x{data[e.start + skip]:02x})") from None


def text_file_path(path, what: str = "corpus file") -> Path:
    """``path`` expanded, or one clear error naming what the file is for (``what``) if it is
    missing or a directory."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CharlmError(f"{what} not found: {path}")
    if path.is_dir():
        raise CharlmError(f"{what} is a directory, not a file: {path}")
    return path


def read_text_file(path, what: str = "corpus file", empty_ok: bool = False) -> str:
    """The text of a plain, .gz, .bz2, .xz or single-file .zip file, decoded as strict UTF-8.
    Errors name the file as ``what``; an empty text is one too unless ``empty_ok``."""
    path = text_file_path(path, what)
    data = _read_bytes(path)
    text = _decode(data, path)
    del data
    if not text and not empty_ok:
        raise CharlmError(f"{what} is empty: {path}")
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
    _hash_into(path, digest)
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
    return read_text_file(_named(spec, data_dir, mirror, progress))


def _named(spec, data_dir, mirror, progress) -> Path:
    """The downloaded file of a dataset name, or the error for a spec that is neither file nor name."""
    path = Path(str(spec)).expanduser()
    name = _dataset_name(spec)
    if name is not None:
        return download(name, data_dir=data_dir, mirror=mirror, progress=progress)
    s = str(spec)
    if any(sep in s for sep in ("/", "\\", os.sep)) or s.startswith(("~", ".")) or path.suffix:
        raise CharlmError(f"corpus file not found: {path} (and it is not a dataset name: {_known()})")
    close = difflib.get_close_matches(s.lower(), DATASETS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise CharlmError(f"no such corpus file or dataset: {spec} (datasets: {_known()}){hint}")


def corpus_specs(corpus) -> list[str]:
    """A corpus setting (one spec, or a list of them: ``--corpus`` repeated) as a list."""
    if corpus is None:
        return []
    return [str(corpus)] if isinstance(corpus, (str, os.PathLike)) else [str(c) for c in corpus]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def corpus_files(corpus, data_dir=None, mirror=None, progress: bool = True) -> list[Path]:
    """The files of a corpus, in reading order: for each spec, a file; a folder's files, recursively,
    in sorted order of their paths inside it (hidden ones left out); a glob's matches, sorted; or a
    dataset's download."""
    files = []
    for spec in corpus_specs(corpus):
        path = Path(spec).expanduser()
        if spec and path.is_dir():
            found = sorted((p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))),
                           key=lambda p: p.relative_to(path).as_posix())
            if not found:
                raise CharlmError(f"corpus folder holds no files: {path}")
            files += found
        elif spec and path.exists():
            files.append(path)
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise CharlmError(f"no files match the corpus pattern {spec}")
            files += found
        else:
            files.append(_named(spec, data_dir, mirror, progress))
    if not files:
        raise CharlmError("no corpus given")
    return [f.resolve() for f in files]


class NotText(CharlmError):
    """A corpus file that is not UTF-8 text (the one-line reason is the message)."""


def iter_text(path, chunk_bytes: int = 1 << 24, counter_out=None, digest=None):
    """The text of a file in pieces of about ``chunk_bytes`` bytes, decoded as strict UTF-8 (a
    leading BOM dropped).  Raises :class:`NotText` naming the file and the first bad byte (a NUL
    byte marks a binary file).  ``counter_out`` (a list) receives the counter of bytes read from
    disk, for progress bars; ``digest`` is fed the stored bytes (:func:`open_binary`)."""
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    with open_binary(path, digest) as (stream, counter):
        if counter_out is not None:
            counter_out.append(counter)
        offset, first = 0, True
        while True:
            with _reading(path):
                block = stream.read(chunk_bytes)
            final = not block
            skip = len(_BOM) if first and block.startswith(_BOM) else 0
            first = False
            nul = block.find(b"\0")
            if nul >= 0:
                raise NotText(f"{path}: not a text file (a NUL byte at byte {offset + nul})")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(memoryview(block)[skip:], final)
            except UnicodeDecodeError as e:
                at = offset + skip - pending + e.start
                raise NotText(f"{path}: not valid UTF-8 at byte {at} (byte 0x{e.object[e.start]:02x})") from None
            offset += len(block)
            if text:
                yield text
            if final:
                return


def describe_corpus(spec) -> str:
    """A short label for logs: the dataset name, or the file path."""
    path = Path(str(spec)).expanduser()
    if str(spec) and path.exists():
        return str(path)
    return _dataset_name(spec) or str(spec)
