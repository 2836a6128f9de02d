"""What the benchmarks share: finding the corpus, reading it, measuring memory."""
import gzip
import os
import resource
import sys
from pathlib import Path

ENV = "CHARLM_BENCH_CORPUS"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT.parent / "shared" / "data" / "text8-first10M.txt.gz"


def find_corpus(arg=None) -> Path:
    """--corpus, else $CHARLM_BENCH_CORPUS, else ../shared/data/text8-first10M.txt.gz."""
    for candidate, how in ((arg, "--corpus"), (os.environ.get(ENV), f"${ENV}"), (str(DEFAULT), "default")):
        if candidate:
            if Path(candidate).is_file():
                return Path(candidate)
            if how != "default":
                sys.exit(f"benchmark corpus not found: {candidate} (from {how})")
    sys.exit(f"benchmark corpus missing: pass --corpus PATH or set {ENV} to a text8 file "
             f"(e.g. the first 10M characters of http://mattmahoney.net/dc/text8.zip, or "
             f"`python cli.py datasets download text8`); looked for {DEFAULT}")


def read_corpus(path, limit=None) -> str:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read() if limit is None else f.read(limit)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
