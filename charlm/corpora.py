"""Where text comes from: files (plain or compressed) and named datasets downloaded on first use.

A download goes to a temporary file beside its final place and is renamed only after its size
and sha256 check out, so a failed, interrupted or wrong download leaves nothing behind.  Where a
dataset's archive digest is not pinned, the digest of the text inside it is checked instead.
``CHARLM_MIRROR`` (or ``mirror=``) replaces the base URL, which is how the real download code
is tested against a local HTTP server.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import socket
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CharlmError

MIRROR_ENV = "CHARLM_MIRROR"
DATA_DIR_ENV = "CHARLM_DATA_DIR"


@dataclass(frozen=True)
class Dataset:
    name: str
    filename: str              # file name under the base URL and in the cache folder
    url: str                   # the official address
    size: int                  # bytes of the downloaded file
    sha256: str | None         # of the downloaded file, where pinned
    member: str | None = None  # the text inside a zip
    member_sha256: str | None = None   # of that text, checked when the archive digest is not pinned
    description: str = ""


DATASETS: dict[str, Dataset] = {
    "text8": Dataset(
        "text8", "text8.zip", "http://mattmahoney.net/dc/text8.zip", 31_344_016, None, "text8",
        # sha256 of the 100,000,000-byte text (as published with public text8 reproductions)
        "6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
        "100M characters of cleaned English Wikipedia, a-z and space (ud730's corpus)"),
    "enwik8": Dataset(
        "enwik8", "enwik8.zip", "http://mattmahoney.net/dc/enwik8.zip", 36_445_475, None, "enwik8", None,
        "the first 100M bytes of an English Wikipedia XML dump (Hutter prize)"),
    "tinyshakespeare": Dataset(
        "tinyshakespeare", "input.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        1_115_394, None, None, None, "1.1M characters of Shakespeare (karpathy/char-rnn)"),
}


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "datasets"


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise CharlmError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_path(name: str, data_dir=None) -> Path:
    return Path(data_dir or default_data_dir()) / _dataset(name).filename


# -- reading files ------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        if name.endswith(".bz2"):
            with bz2.open(path, "rb") as f:
                return f.read()
        if name.endswith(".xz") or name.endswith(".lzma"):
            with lzma.open(path, "rb") as f:
                return f.read()
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                members = [m for m in z.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise CharlmError(f"{path}: a .zip corpus must hold exactly one file, this one holds "
                                      f"{len(members)}")
                return z.read(members[0])
        return path.read_bytes()
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as e:
        if isinstance(e, PermissionError):
            raise CharlmError(f"cannot read {path}: permission denied")
        raise CharlmError(f"{path}: corrupt or unreadable file ({type(e).__name__}: {e})")


def decode_text(data: bytes, source) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{source}: not valid UTF-8 at byte {e.start} (byte 0x{data[e.start]:02x})")
    return text[1:] if text.startswith("\ufeff") else text


def read_text_file(path) -> str:
    """The text of a plain, .gz, .bz2, .xz or single-member .zip file, decoded as UTF-8."""
    path = Path(path)
    if not path.exists():
        raise CharlmError(f"corpus file not found: {path}")
    if path.is_dir():
        raise CharlmError(f"corpus path is a directory, not a file: {path}")
    text = decode_text(_read_bytes(path), path)
    if not text:
        raise CharlmError(f"corpus is empty: {path}")
    return text


# -- downloads -------------------------------------------------------------------------------------------
def _progress(done: int, total: int, label: str):
    width = 30
    filled = int(width * done / total) if total else 0
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done / 1e6:7.1f}/{total / 1e6:.1f} MB")
    sys.stderr.flush()


def _check_member(ds: Dataset, path: Path):
    if ds.member_sha256 is None:
        return
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as z, z.open(ds.member) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        raise CharlmError(f"the download of {ds.name} is not the expected archive ({e})")
    if digest.hexdigest() != ds.member_sha256:
        raise CharlmError(f"the download of {ds.name} failed its checksum (sha256 of {ds.member} is "
                          f"{digest.hexdigest()}, expected {ds.member_sha256})")


def download(name: str, data_dir=None, mirror=None, progress: bool = True, timeout: float = 10.0) -> Path:
    """The cached file of dataset ``name``, downloading and checking it first if needed."""
    ds = _dataset(name)
    target = dataset_path(name, data_dir)
    if target.exists() and target.stat().st_size == ds.size:
        return target
    base = mirror or os.environ.get(MIRROR_ENV) or ds.url.rsplit("/", 1)[0]
    url = f"{base.rstrip('/')}/{ds.filename}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{ds.filename}.part-{os.getpid()}")
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while True:
                    block = response.read(1 << 16)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    if progress:
                        _progress(size, ds.size, f"downloading {ds.name}")
        except urllib.error.HTTPError as e:
            raise CharlmError(f"could not download {ds.name} from {url} (HTTP {e.code} {e.reason}); "
                              f"set --mirror / {MIRROR_ENV}, or train on a local file with --corpus PATH")
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CharlmError(f"could not download {ds.name} from {url} ({reason}); check the network, "
                              f"set --mirror / {MIRROR_ENV}, or train on a local file with --corpus PATH")
        finally:
            if progress and size:
                sys.stderr.write("\n")
        if size != ds.size:
            raise CharlmError(f"the download of {ds.name} from {url} has {size:,} bytes, expected "
                              f"{ds.size:,}; nothing was kept")
        if ds.sha256 is not None and digest.hexdigest() != ds.sha256:
            raise CharlmError(f"the download of {ds.name} from {url} failed its checksum (sha256 "
                              f"{digest.hexdigest()}, expected {ds.sha256}); nothing was kept")
        if ds.member:
            _check_member(ds, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def load_corpus(spec: str, data_dir=None, mirror=None, progress: bool = True) -> str:
    """Text of a corpus: a file path, or the name of a dataset (downloaded on first use)."""
    path = Path(spec)
    if path.exists():
        return read_text_file(path)
    if spec in DATASETS:
        ds = DATASETS[spec]
        cached = download(spec, data_dir=data_dir, mirror=mirror, progress=progress)
        if ds.member is None:
            return read_text_file(cached)
        with zipfile.ZipFile(cached) as z:
            return decode_text(z.read(ds.member), f"{cached}:{ds.member}")
    if any(ch in spec for ch in "/\\.") or spec.endswith(("txt", "gz", "zip")):
        raise CharlmError(f"corpus file not found: {spec}")
    raise CharlmError(f"no such corpus file or dataset: {spec} (datasets: {', '.join(DATASETS)})")


def describe_corpus(spec: str) -> str:
    return spec if spec in DATASETS else str(Path(spec))
