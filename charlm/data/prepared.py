"""Corpora prepared once: the text's character ids in a file, read back through ``np.memmap``.

Reading a corpus whole costs ~3.5 bytes of memory a character (the bytes, the str, the ids) and
the same read, vocabulary and encoding at every run.  :func:`prepare` instead streams the files
in pieces, twice: one pass counts the characters (the vocabulary, :meth:`Vocabulary.from_counts`),
the other encodes each piece with :meth:`Vocabulary.encode` and appends the ids (the smallest
unsigned dtype that holds the vocabulary) to ``ids.bin``.  Later runs open that file as a memory
map, so a run holds only the pages its batches touch, and starts in the time a ``stat`` of each
file takes.

The cache folder is named by a digest of the files' paths, sizes and mtimes and the vocabulary
settings (separator, skipped files, a given vocabulary), so a changed file makes a new one (and
the old one is removed).  It is written under a hidden name and renamed into place whole, so a
half-written cache is never used; a failing write (a full disk) ends in one line and leaves
nothing.  An ``flock`` beside it makes concurrent preparations of the same corpus (the workers of
a multi-worker run on a shared folder) wait for the first one, then share its file.

Token ids other than a plain view of the character ids (bigrams; a ``spread`` split's training
part) are cut the same way, chunk by chunk with the tokenizer's own :meth:`Tokenizer.tokens`, into
a ``tokens-*.bin`` beside them (:func:`token_file`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm.data import corpora
from charlm.data.splits import join, split_ranges
from charlm.data.vocab import CHUNK, Tokenizer, Vocabulary, _codepoints, byte_counts
from charlm.errors import CharlmError
from charlm.runtime import cache_home

PREPARED_DIR_ENV = "CHARLM_PREPARED_DIR"
FORMAT = 1
READ_BYTES = 1 << 20          # bytes of a file decoded at a time (its numpy passes stay in the cache)
IDS_FILE, META_FILE = "ids.bin", "meta.json"
_CODE_POINTS = 0x110000


def prepared_root(root=None) -> Path:
    """Where prepared corpora live: ``root``, else ``$CHARLM_PREPARED_DIR``, else charlm's cache."""
    if root is None:
        root = os.environ.get(PREPARED_DIR_ENV) or os.path.join(cache_home(), "prepared")
    return Path(root).expanduser()


@dataclass
class Prepared:
    """A prepared corpus: its folder, what it was made from, its vocabulary and its ids (memmap)."""
    folder: Path
    meta: dict
    vocab: Vocabulary
    ids: np.ndarray
    fresh: bool = False          # prepared by this call (else found ready)
    seconds: float = 0.0

    @property
    def characters(self) -> int:
        return int(self.ids.size)

    def config_entry(self) -> dict:
        """What a run's ``config.json`` records of its corpus: each file's size and sha256, and the
        files left out as not text."""
        entry = {"corpus_files": [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]}
                                  for f in self.meta["files"]]}
        if self.meta["skipped"]:
            entry["skipped_files"] = self.meta["skipped"]
        return entry

    def describe(self) -> str:
        files = self.meta["files"]
        skipped = self.meta["skipped"]
        what = f"{self.characters:,} characters in {len(files)} file{'s' * (len(files) != 1)}"
        if skipped:
            what += f" ({len(skipped)} not text, skipped)"
        return what


def _stats(files) -> list:
    out = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError as e:
            raise CharlmError(f"cannot read {path}: {e.strerror or e}") from None
        out.append([str(path), st.st_size, st.st_mtime_ns])
    return out


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _open(folder: Path, fresh=False, seconds=0.0) -> Prepared | None:
    """The prepared corpus in ``folder``, or None if there is none (or an unreadable one)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        vocab = Vocabulary(meta["vocab"])
        ids = np.memmap(folder / IDS_FILE, dtype=vocab.dtype, mode="r", shape=(meta["characters"],))
    except (OSError, ValueError, KeyError, CharlmError):
        return None
    return Prepared(folder, meta, vocab, ids, fresh, seconds)


@contextlib.contextmanager
def _locked(root: Path, name: str):
    """One preparer of ``name`` at a time (the others wait, then find it ready)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CharlmError(f"cannot write to the prepared-corpus folder {root}: {e.strerror or e} "
                          f"(set {PREPARED_DIR_ENV} to another folder)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare(corpus, separator: str = "\n", skip_bad_files: bool = False, vocabulary: Vocabulary | None = None,
            oov: str = "error", root=None, progress: bool = True, log=None, files=None,
            what: str | None = None) -> Prepared:
    """The prepared corpus of ``corpus`` (one spec or a list: files, folders, globs, dataset names),
    made now if it is not ready.

    The files are joined by ``separator``.  ``skip_bad_files``: a file that is not UTF-8 text is
    left out (and counted) instead of stopping with a line naming it.  ``vocabulary``: encode with
    this one (a resumed run's, a model's), ``oov`` saying what to do with characters outside it;
    else the vocabulary is the corpus's characters.  ``log`` receives a line when it prepares;
    ``what`` names the text in the line about characters outside ``vocabulary`` (default: the file).
    """
    files = files if files is not None else corpora.corpus_files(corpus, progress=progress)
    stats = _stats(files)
    settings = {"format": FORMAT, "separator": separator, "skip_bad_files": bool(skip_bad_files),
                "vocab": vocabulary.chars if vocabulary is not None else None, "oov": oov}
    name = f"{_digest([s[0] for s in stats])[:12]}-{_digest([stats, settings])[:16]}"
    root = prepared_root(root)
    folder = root / name
    ready = _open(folder)
    if ready is not None:
        return ready
    with _locked(root, name):
        ready = _open(folder)                   # another process may have made it meanwhile
        if ready is not None:
            return ready
        began = time.perf_counter()
        if log is not None:
            log(f"preparing the corpus ({len(files)} file{'s' * (len(files) != 1)}, "
                f"{sum(s[1] for s in stats) / 1e6:,.1f} MB on disk) in {folder}")
        _build(files, stats, settings, vocabulary, oov, skip_bad_files, separator, root, folder, progress, what)
        prepared = _open(folder, fresh=True, seconds=time.perf_counter() - began)
    if prepared is None:
        raise CharlmError(f"the prepared corpus in {folder} cannot be read back")
    _remove_stale(root, name, stats)
    return prepared


def _remove_stale(root: Path, name: str, stats):
    """Prepared copies of the same files as they were before they changed."""
    prefix = name.split("-")[0]
    for other in root.glob(f"{prefix}-*"):
        if other.name == name:
            continue
        try:
            meta = json.loads((other / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("stats") != stats:
            shutil.rmtree(other, ignore_errors=True)     # a reader's open map stays valid


def _tty() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class _Progress:
    """Bytes read from disk in both passes, on one bar."""

    def __init__(self, label: str, total: int, show: bool):
        # on a terminal only: elsewhere the caller's log line says what is being prepared
        self.bar = corpora._ProgressBar(label, max(total, 1)) if show and _tty() else None
        self.done = 0

    def update(self, counter):
        if self.bar is not None:
            self.bar.update(self.done + counter.done)

    def file_done(self, size: int):
        self.done += size

    def finish(self, ok: bool):
        if self.bar is not None:
            self.bar.finish(ok)


def _count(path: Path, progress: _Progress) -> np.ndarray:
    """How often each code point occurs in one file (raises corpora.NotText)."""
    local = np.zeros(256, dtype=np.int64)
    counter = []
    for text in corpora.iter_text(path, READ_BYTES, counter_out=counter):
        codes = _codepoints(text)
        if codes.dtype == np.uint8:
            local[:256] += byte_counts(codes)
        else:
            for start in range(0, codes.size, CHUNK):
                found = np.bincount(codes[start:start + CHUNK])
                if found.size > local.size:
                    local = np.concatenate([local, np.zeros(found.size - local.size, np.int64)])
                local[:found.size] += found
        progress.update(counter[0])
    return local


def _build(files, stats, settings, vocabulary, oov, skip_bad_files, separator, root, folder, show, what):
    passes = 1 if vocabulary is not None else 2
    total = sum(s[1] for s in stats)
    progress = _Progress(f"preparing {files[0].name if len(files) == 1 else f'{len(files)} files'}",
                         total * passes, show)
    ok = False
    skipped, good = [], list(files)
    try:
        if vocabulary is None:                  # pass 1: the vocabulary
            counts = np.zeros(_CODE_POINTS, dtype=np.int64)
            good = []
            for path, (_, size, _) in zip(files, stats):
                try:
                    local = _count(path, progress)
                except corpora.NotText as e:
                    if not skip_bad_files:
                        raise CharlmError(f"{e} (--skip-bad-files leaves such files out)") from None
                    skipped.append({"path": str(path), "why": str(e)})
                else:
                    counts[:local.size] += local
                    good.append(path)
                progress.file_done(size)
            if len(good) > 1 and separator:
                for code in _codepoints(separator):
                    counts[int(code)] += len(good) - 1
            if not counts.any():
                raise CharlmError(f"corpus is empty: {', '.join(str(f) for f in files[:3])}"
                                  + (" ..." if len(files) > 3 else ""))
            vocabulary = Vocabulary.from_counts(counts)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.part-", dir=root))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)          # readable by every user, as a cache folder is
        try:
            entries, characters = _write_ids(good, stats, vocabulary, oov, skip_bad_files, separator, tmp,
                                             progress, skipped, what)
            if characters == 0:
                raise CharlmError(f"no characters left to score after skipping unknown ones ({files[0]})" if oov == "skip"
                                  else f"corpus is empty: {files[0]}")
            meta = {**settings, "stats": stats, "files": entries, "skipped": skipped,
                    "vocab": vocabulary.chars, "dtype": vocabulary.dtype.name, "characters": characters}
            _write_json(tmp / META_FILE, meta)
            _fsync_dir(tmp)
            os.rename(tmp, folder)
            ok = True
        except OSError as e:
            free = shutil.disk_usage(root).free if root.exists() else 0
            raise CharlmError(f"cannot prepare the corpus in {root}: {e.strerror or e} "
                              f"({free / 1e6:,.1f} MB free); nothing was kept") from None
        finally:
            if not ok:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        progress.finish(ok)


def _write_ids(good, stats, vocabulary, oov, skip_bad_files, separator, tmp, progress, skipped, what):
    """Pass 2: every good file's ids, appended to ``ids.bin``: ``(one entry per file with its place
    and sha256, characters in all)``."""
    sizes = {str(path): size for path, size, _ in stats}
    sep_ids = vocabulary.encode(separator, what="the --separator") if separator and len(good) > 1 else None
    entries = []
    with open(tmp / IDS_FILE, "wb") as out:
        for path in good:
            before = out.tell()
            digest = hashlib.sha256()
            counter = []
            try:
                if entries and sep_ids is not None:
                    out.write(memoryview(sep_ids))
                start = out.tell()
                for text in corpora.iter_text(path, READ_BYTES, counter_out=counter, digest=digest):
                    out.write(memoryview(vocabulary.encode(text, oov=oov, what=what or str(path))))
                    progress.update(counter[0])
            except corpora.NotText as e:
                if not skip_bad_files:
                    raise CharlmError(f"{e} (--skip-bad-files leaves such files out)") from None
                out.seek(before)                # the file changed since pass 1, or pass 1 was skipped
                out.truncate()
                skipped.append({"path": str(path), "why": str(e)})
                continue
            finally:
                progress.file_done(sizes[str(path)])
            item = vocabulary.dtype.itemsize
            entries.append({"path": str(path), "size": sizes[str(path)], "sha256": digest.hexdigest(),
                            "start": start // item, "characters": (out.tell() - start) // item})
        out.flush()
        os.fsync(out.fileno())
        return entries, out.tell() // vocabulary.dtype.itemsize


def _write_json(path: Path, data: dict):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_for(corpus, vocabulary: Vocabulary, separator: str = "\n", skip_bad_files: bool = False,
                oov: str = "error", what: str = "corpus", **options) -> Prepared:
    """The corpus prepared in ``vocabulary`` (a resumed run's, a model's): its usual preparation
    when that has the same characters (the run's own corpus), else one encoded in ``vocabulary``."""
    prepared = prepare(corpus, separator, skip_bad_files, **options)
    if prepared.vocab == vocabulary:
        return prepared
    return prepare(corpus, separator, skip_bad_files, vocabulary=vocabulary, oov=oov, what=what, **options)


def split(prepared: Prepared, valid_size: int, how: str):
    """``(validation ids in memory, training ranges)`` of a prepared corpus (charlm.data.splits)."""
    valid, train = split_ranges(prepared.characters, valid_size, how)
    return np.array(join(prepared.ids, valid)), train


def _pieces(ids, ranges, size: int | None = None):
    size = size or CHUNK
    for a, b in ranges:
        for start in range(a, b, size):
            yield ids[start:min(start + size, b)]


def cut_tokens(tokenizer: Tokenizer, pieces, write) -> np.ndarray:
    """The tokens of the character ids in ``pieces`` (one text, in order) passed to ``write``
    piece by piece, exactly as ``tokenizer.tokens`` cuts the whole text; returns the character
    ids :meth:`Tokenizer.leftover` leaves over.

    A bigram cut of a piece is the whole text's cut except at the piece's end: a dense layout keeps
    the odd character for the next piece, and the sparse one a final single character (the whole
    text might pair it with the next piece's first one; everything before it is decided the same).
    """
    carry = None
    for piece in pieces:
        ids = piece if carry is None else np.concatenate([carry, piece])
        carry = None
        if tokenizer.kind == "char":
            write(tokenizer.tokens(ids))
        elif not tokenizer.sparse:
            even = ids.size // 2 * 2
            write(tokenizer.tokens(ids[:even]))
            carry = np.array(ids[even:]) if even < ids.size else None
        else:
            tokens = tokenizer.tokens(ids)
            if tokens.size and tokens[-1] < tokenizer.vocab.size:
                write(tokens[:-1])
                carry = np.array(ids[-1:])
            else:
                write(tokens)
    if carry is None:
        return np.zeros(0, dtype=tokenizer.vocab.dtype)
    if tokenizer.sparse:
        write(tokenizer.tokens(carry))
    return tokenizer.leftover(carry)


def token_file(prepared: Prepared, tokenizer: Tokenizer, ranges):
    """``(token ids, leftover character ids)`` of the ranges of a prepared corpus read as one text:
    a view of the character ids when that is what they are, else a ``tokens-*.bin`` made once."""
    ids = prepared.ids
    ranges = [(int(a), int(b)) for a, b in ranges if b > a]
    if tokenizer.kind == "char" and len(ranges) == 1 and tokenizer.dtype == ids.dtype:
        return ids[ranges[0][0]:ranges[0][1]], ids[:0]
    name = f"tokens-{_digest([tokenizer.kind, tokenizer.to_dict(), ranges])[:16]}"
    folder = prepared.folder
    found = _open_tokens(folder, name, tokenizer)
    if found is not None:
        return found
    with _locked(folder, name):
        found = _open_tokens(folder, name, tokenizer)
        if found is not None:
            return found
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.part-", dir=folder)
        ok = False
        try:
            with os.fdopen(fd, "wb") as out:
                leftover = cut_tokens(tokenizer, _pieces(ids, ranges),
                                      lambda t: out.write(memoryview(np.ascontiguousarray(t, tokenizer.dtype))))
                count = out.tell() // tokenizer.dtype.itemsize
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, folder / f"{name}.bin")
            _write_json(folder / f".{name}.json.part", {"tokens": count, "dtype": tokenizer.dtype.name,
                                                        "leftover": leftover.tolist()})
            os.replace(folder / f".{name}.json.part", folder / f"{name}.json")
            ok = True
        except OSError as e:
            raise CharlmError(f"cannot write the token ids in {folder}: {e.strerror or e} "
                              f"({shutil.disk_usage(folder).free / 1e6:,.1f} MB free); nothing was kept") from None
        finally:
            if not ok:
                for leftover_file in (tmp, folder / f".{name}.json.part"):
                    with contextlib.suppress(OSError):
                        os.unlink(leftover_file)
    found = _open_tokens(folder, name, tokenizer)
    if found is None:
        raise CharlmError(f"the token ids in {folder / name}.bin cannot be read back")
    return found


def _open_tokens(folder: Path, name: str, tokenizer: Tokenizer):
    try:
        meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        if not meta["tokens"]:
            return np.zeros(0, tokenizer.dtype), np.array(meta["leftover"], dtype=tokenizer.vocab.dtype)
        tokens = np.memmap(folder / f"{name}.bin", dtype=tokenizer.dtype, mode="r", shape=(meta["tokens"],))
    except (OSError, ValueError, KeyError):
        return None
    return tokens, np.array(meta["leftover"], dtype=tokenizer.vocab.dtype)


@contextlib.contextmanager
def streamed_text(path, tokenizer: Tokenizer, oov: str = "error", root=None):
    """``(prepared text, token ids, leftover ids)`` of one file in a model's vocabulary, streamed
    into a scratch folder (removed afterwards) so that a text of any size is scored from disk."""
    root = prepared_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".text-", dir=root))
    except OSError as e:
        raise CharlmError(f"cannot write to the prepared-corpus folder {root}: {e.strerror or e} "
                          f"(set {PREPARED_DIR_ENV} to another folder)") from None
    try:
        prepared = prepare([path], vocabulary=tokenizer.vocab, oov=oov, root=scratch, progress=False,
                           what="evaluation text", files=[Path(path).expanduser().resolve()])
        tokens, leftover = token_file(prepared, tokenizer, [(0, prepared.characters)])
        yield prepared, tokens, leftover
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
