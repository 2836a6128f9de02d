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
import mmap
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
        """Ids (characters, or with byte ids the units they are read as)."""
        return int(self.ids.size)

    def char_counts(self) -> np.ndarray:
        """``[code points]`` counts of the corpus's characters (a run chooses its vocabulary from
        them, :meth:`Vocabulary.from_counts`): kept in the meta when counted, else counted now."""
        if self.vocab.bytes:
            raise CharlmError("a corpus prepared with byte ids has no character counts")
        found = self.meta.get("counts")
        if found is None:
            found = np.zeros(self.vocab.size, dtype=np.int64)
            for start in range(0, self.ids.size, CHUNK):
                found += np.bincount(self.ids[start:start + CHUNK], minlength=self.vocab.size)
            release(self.ids)
        counts = np.zeros(int(self.vocab._codes.max()) + 1, dtype=np.int64)
        counts[self.vocab._codes] = found
        return counts

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


def release(array):
    """Drop the pages of a memory-mapped array from this process's resident set.  They stay in the
    page cache (the next read of them is a minor fault), so a pass through a corpus of any size holds
    only what it read since the last call."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


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
        vocab = Vocabulary(meta["vocab"], byte_fallback=meta.get("byte_fallback", False))
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
            oov: str | None = None, root=None, progress: bool = True, log=None, files=None,
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
    if vocabulary is not None and vocabulary.bytes:
        settings["byte_fallback"] = True
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


def _piece_counts(codes: np.ndarray) -> np.ndarray:
    """How often each code point occurs in a piece (indexed by code point)."""
    if codes.dtype == np.uint8:
        return byte_counts(codes)
    local = np.zeros(256, dtype=np.int64)
    for start in range(0, codes.size, CHUNK):
        found = np.bincount(codes[start:start + CHUNK])
        if found.size > local.size:
            local = np.concatenate([local, np.zeros(found.size - local.size, np.int64)])
        local[:found.size] += found
    return local


class _Writer:
    """``ids.bin`` as it is appended to, file by file, in one vocabulary."""

    def __init__(self, path: Path, vocab: Vocabulary, oov: str, what: str | None):
        self.out = open(path, "wb")
        self.vocab, self.oov, self.what = vocab, oov, what
        self.entries = []

    def begin(self, separator_ids):
        self.before = self.out.tell()
        if self.entries and separator_ids is not None:
            self.out.write(memoryview(separator_ids))
        self.start = self.out.tell()

    def write(self, text: str, path: Path):
        self.out.write(memoryview(self.vocab.encode(text, oov=self.oov, what=self.what or str(path))))

    def drop(self):
        self.out.seek(self.before)
        self.out.truncate()

    def end(self, path: Path, size: int):
        item = self.vocab.dtype.itemsize
        self.entries.append({"path": str(path), "size": size, "start": self.start // item,
                             "characters": (self.out.tell() - self.start) // item})

    def close(self) -> int:
        self.out.flush()
        os.fsync(self.out.fileno())
        self.out.close()
        return self.entries[-1]["start"] + self.entries[-1]["characters"] if self.entries else 0


def _read(files, stats, progress, skipped, skip_bad_files, separator, counts=None, writer=None,
          speculate=None):
    """One read of the files: ``(the files that are text, their sha256s, the writer if it is
    still writing)``.

    ``counts``: add each text file's characters to it (pass 1).  ``writer``: append each piece's
    ids (pass 2).  ``speculate``: pass 1 also writes the ids, in the vocabulary of the first piece,
    into ``ids.bin`` in this folder, for as long as every piece holds no other characters; if the
    whole corpus's vocabulary turns out to be that one, those ids are the ids, and pass 2 (a
    second read of the files from disk) is not needed.
    """
    good, digests = [], {}
    known = None
    for path, (_, size, _) in zip(files, stats):
        counter, digest = [], hashlib.sha256()
        local = np.zeros(256, dtype=np.int64) if counts is not None else None

        def begin(writer):
            """The file's start in ids.bin, after the separator: ``(writer or None, began)``."""
            sep = _codepoints(separator) if separator and good else None
            if sep is not None and known is not None and not known[sep.astype(np.int64)].all():
                writer.out.close()              # the separator is outside the first piece's characters
                return None, False
            writer.begin(None if sep is None else writer.vocab.encode(separator, what="the --separator"))
            return writer, True

        writer, began = begin(writer) if writer is not None else (None, False)
        try:
            for text in corpora.iter_text(path, READ_BYTES, counter_out=counter, digest=digest):
                if local is not None:
                    found = _piece_counts(_codepoints(text))
                    if found.size > local.size:
                        local = np.concatenate([local, np.zeros(found.size - local.size, np.int64)])
                    local[:found.size] += found
                    if speculate is not None and writer is None and known is None:
                        writer = _Writer(speculate / IDS_FILE, Vocabulary.from_counts(found), "error", None)
                        known = np.zeros(_CODE_POINTS, dtype=bool)
                        known[np.nonzero(found)[0]] = True
                    if known is not None and writer is not None and found[~known[:found.size]].any():
                        writer.out.close()          # another character: the ids need pass 2
                        writer = None
                if writer is not None and not began:
                    writer, began = begin(writer)
                if writer is not None:
                    writer.write(text, path)
                progress.update(counter[0])
        except corpora.NotText as e:
            if not skip_bad_files:
                raise CharlmError(f"{e} (--skip-bad-files leaves such files out)") from None
            skipped.append({"path": str(path), "why": str(e)})
            if writer is not None and began:
                writer.drop()
            continue
        finally:
            progress.file_done(size)
        if local is not None:
            counts[:local.size] += local
        if writer is not None:
            writer.end(path, size)
        good.append(path)
        digests[str(path)] = digest.hexdigest()
    return good, digests, writer


def _build(files, stats, settings, vocabulary, oov, skip_bad_files, separator, root, folder, show, what):
    total = sum(s[1] for s in stats)
    progress = _Progress(f"preparing {files[0].name if len(files) == 1 else f'{len(files)} files'}",
                         total * (1 if vocabulary is not None else 2), show)
    ok = False
    skipped = []
    tmp = None
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.part-", dir=root))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)          # readable by every user, as a cache folder is
            found = {}
            if vocabulary is None:
                counts = np.zeros(_CODE_POINTS, dtype=np.int64)
                good, digests, writer = _read(files, stats, progress, skipped, skip_bad_files, separator,
                                              counts=counts, speculate=tmp)
                if len(good) > 1 and separator:
                    for code in _codepoints(separator):
                        counts[int(code)] += len(good) - 1
                if not counts.any():
                    raise CharlmError(f"corpus is empty: {', '.join(str(f) for f in files[:3])}"
                                      + (" ..." if len(files) > 3 else ""))
                vocabulary = Vocabulary.from_counts(counts)
                found = {"counts": counts[vocabulary._codes].tolist()}
                if writer is not None and writer.vocab == vocabulary:
                    progress.done = total * 2
                else:                           # pass 2
                    if writer is not None:
                        writer.out.close()
                    writer = _Writer(tmp / IDS_FILE, vocabulary, oov, what)
                    _read(good, [s for s in stats if Path(s[0]) in set(good)], progress, skipped,
                          skip_bad_files, separator, writer=writer)
            else:
                writer = _Writer(tmp / IDS_FILE, vocabulary, oov, what)
                good, digests, _ = _read(files, stats, progress, skipped, skip_bad_files, separator,
                                         writer=writer)
            characters = writer.close()
            if characters == 0:
                raise CharlmError(f"no characters left to score after skipping unknown ones ({files[0]})"
                                  if oov == "skip" else f"{what or 'corpus'} is empty: {files[0]}")
            entries = [{**e, "sha256": digests[e["path"]]} for e in writer.entries]
            meta = {**settings, "stats": stats, "files": entries, "skipped": skipped,
                    "vocab": vocabulary.chars, "dtype": vocabulary.dtype.name, "characters": characters,
                    **({"byte_fallback": True} if vocabulary.bytes else {}), **found}
            _write_json(tmp / META_FILE, meta)
            _fsync_dir(tmp)
            os.rename(tmp, folder)
            ok = True
        except OSError as e:
            free = shutil.disk_usage(root).free if root.exists() else 0
            raise CharlmError(f"cannot prepare the corpus in {root}: {e.strerror or e} "
                              f"({free / 1e6:,.1f} MB free); nothing was kept") from None
        finally:
            if not ok and tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        progress.finish(ok)


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
                oov: str | None = None, what: str = "corpus", **options) -> Prepared:
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
def streamed_text(path, tokenizer: Tokenizer, oov: str | None = None, root=None, what="evaluation text"):
    """``(prepared text, token ids, leftover ids)`` of one file in a model's vocabulary, streamed
    into a scratch folder (removed afterwards) so that a text of any size is scored from disk.
    Errors (an empty text, a foreign character) name the file as ``what``."""
    root = prepared_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".text-", dir=root))
    except OSError as e:
        raise CharlmError(f"cannot write to the prepared-corpus folder {root}: {e.strerror or e} "
                          f"(set {PREPARED_DIR_ENV} to another folder)") from None
    try:
        prepared = prepare([path], vocabulary=tokenizer.vocab, oov=oov, root=scratch, progress=False,
                           what=what, files=[Path(path).expanduser().resolve()])
        tokens, leftover = token_file(prepared, tokenizer, [(0, prepared.characters)])
        yield prepared, tokens, leftover
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
