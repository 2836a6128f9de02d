"""Shared helpers for the benchmark scripts: locate and read the corpus, measure memory, print results.

Corpus lookup order: the ``--corpus`` argument, then ``$CHARLM_BENCH_CORPUS``, then
``<repo>/../shared/data/text8-first10M.txt.gz``.  When none of these names a file, the scripts stop
with one line on stderr saying how to get a corpus, and exit status 2.
"""
import contextlib
import gzip
import io
import json
import os
import resource
import sys
import zipfile
from pathlib import Path
from typing import NoReturn

ENV_VAR = "CHARLM_BENCH_CORPUS"
ROOT = Path(__file__).resolve().parent.parent            # the repository
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "text8-first10M.txt.gz"

HOW_TO_GET = ("get text8 from http://mattmahoney.net/dc/text8.zip (the benchmarks use its first 10M "
              "characters) or run `python cli.py datasets download text8`, then pass --corpus PATH "
              f"or set {ENV_VAR}=PATH")


def _missing(message: str) -> NoReturn:
    print(f"benchmark corpus missing: {message}; {HOW_TO_GET}", file=sys.stderr, flush=True)
    sys.exit(2)


def find_corpus(arg=None) -> Path:
    """Path of the benchmark corpus: ``arg``, else ``$CHARLM_BENCH_CORPUS``, else the shared default.

    An explicit argument or environment value that is not a file is an error (no silent fallback).
    """
    if arg:
        path = Path(arg).expanduser()
        if not path.is_file():
            _missing(f"--corpus {arg} is not a file")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            _missing(f"${ENV_VAR}={env} is not a file")
        return path
    if DEFAULT_CORPUS.is_file():
        return DEFAULT_CORPUS
    _missing(f"no --corpus, no ${ENV_VAR}, and no {DEFAULT_CORPUS}")


def read_corpus(path, limit=None) -> str:
    """The text of ``path`` (UTF-8: plain, ``.gz``, or a ``.zip`` holding one file such as
    text8.zip); only its first ``limit`` characters if given."""
    path = Path(path)
    if path.suffix == ".gz":
        f = gzip.open(path, "rt", encoding="utf-8")
    elif path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/")]
        if len(members) != 1:
            print(f"{path}: expected a zip holding one file, found {len(members)}", file=sys.stderr)
            sys.exit(2)
        f = io.TextIOWrapper(archive.open(members[0]), encoding="utf-8")
    else:
        f = open(path, "rt", encoding="utf-8")
    with f:
        return f.read() if limit is None else f.read(limit)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def emit(result: dict) -> None:
    """Print ``result`` as one JSON line on stdout (the scripts' machine-readable output)."""
    def plain(value):                      # numpy scalars and arrays from the peers
        return value.item() if hasattr(value, "item") and getattr(value, "size", 1) == 1 else str(value)

    sys.stdout.write(json.dumps(result, default=plain) + "\n")
    sys.stdout.flush()


def log(*parts) -> None:
    """Progress output: stderr, so stdout stays one JSON line."""
    print(*parts, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block (TensorFlow's C++ start-up notices
    ignore TF_CPP_MIN_LOG_LEVEL).  Python exceptions raised inside still reach the terminal,
    since stderr is restored before they propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
