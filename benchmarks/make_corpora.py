#!/usr/bin/env python
"""Build the general-text corpora of the quality-per-time tables from Debian packages.

    python benchmarks/make_corpora.py OUT_DIR

Downloads (``apt-get download``, no root needed) and unpacks ``fortunes`` (with ``fortunes-min``,
which it depends on), ``dict-jargon`` and ``fortunes-zh``, then writes into OUT_DIR:

- ``fortunes-mixed.txt``: 1,100,000 characters of mixed-case English, the ``fortunes`` package's
  cookies (all files but the ASCII-art ones) in a fixed shuffled order (seed 0), joined by the
  files' own ``%`` lines (the files read as Latin-1), so the last 10% held out is the same kind of text as the first 90%;
- ``jargon.txt``: the first 1,100,000 characters of the Jargon File (``dict-jargon``), a
  different English (definitions, cross-references, ASCII markup) to check a preset on;
- ``zh.txt``: the ``fortunes-zh`` files, 1.16M characters of Chinese (6,174 distinct);
- ``zh-chinese.txt`` and ``zh-poems.txt``: the same package as two sources, its ``chinese`` file
  (1.12M characters: sayings, classical poems, Debian's documents) to train on, and its two poem
  anthologies ``tang300`` and ``song100`` (46,189 characters) to score on: text of another source.

Never commit them into the project.
"""
import gzip
import random
import subprocess
import sys
import tempfile
from pathlib import Path

SIZE = 1_100_000


def unpack(packages: list[str], into: Path, name: str) -> Path:
    """The files of ``packages`` (downloaded into ``into``) unpacked into one folder, as installed."""
    root = into / name
    for package in packages:
        subprocess.run(["apt-get", "download", package], cwd=into, check=True, capture_output=True)
        deb = next(into.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def fortune_files(folder: Path, encoding: str):
    """``(name, text)`` of a fortune folder's text files (not ``.dat``/``.u8``), universal newlines."""
    for path in sorted(folder.iterdir()):
        if "." not in path.name:
            with open(path, encoding=encoding) as f:
                yield path.name, f.read()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = unpack(["fortunes-min", "fortunes"], tmp, "fortunes")     # fortunes needs fortunes-min
        cookies = []
        for name, text in fortune_files(root / "usr/share/games/fortunes", "latin-1"):
            if name not in ("art", "ascii-art"):
                cookies += [c.strip("\n") for c in text.split("\n%\n") if c.strip()]
        random.Random(0).shuffle(cookies)
        (out / "fortunes-mixed.txt").write_text("\n%\n".join(cookies)[:SIZE], encoding="utf-8")

        root = unpack(["dict-jargon"], tmp, "jargon")
        jargon = gzip.open(root / "usr/share/dictd/jargon.dict.dz").read().decode("utf-8", "replace")
        (out / "jargon.txt").write_text(jargon[:SIZE], encoding="utf-8")

        root = unpack(["fortunes-zh"], tmp, "zh")
        files = dict(fortune_files(root / "usr/share/games/fortunes", "utf-8"))
        (out / "zh.txt").write_text("".join(files.values()), encoding="utf-8")
        (out / "zh-chinese.txt").write_text(files["chinese"], encoding="utf-8")
        (out / "zh-poems.txt").write_text(files["tang300"] + files["song100"], encoding="utf-8")
    for name in ("fortunes-mixed.txt", "jargon.txt", "zh.txt", "zh-chinese.txt", "zh-poems.txt"):
        text = (out / name).read_text(encoding="utf-8")
        print(f"{out / name}: {len(text):,} characters, {len(set(text)):,} distinct")


if __name__ == "__main__":
    main()
