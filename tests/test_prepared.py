"""Corpora of many files and of any size: streamed once into a memory-mapped cache (charlm.data.prepared)."""
import gzip
import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, make_text
from charlm.data import prepared
from charlm.data.prepared import cut_tokens, prepare, token_file
from charlm.data.splits import split_ids
from charlm.data.vocab import Tokenizer, Vocabulary
from charlm.errors import CharlmError

CLI = [sys.executable, str(ROOT / "cli.py")]


@pytest.fixture
def books(tmp_path):
    """A folder of three texts (one compressed, one in a subfolder) and a hidden file."""
    root = tmp_path / "books"
    (root / "b").mkdir(parents=True)
    texts = {"a.txt": "alpha " * 50, "b/c.txt.gz": "gamma " * 40, "b.txt": "beta " * 30}
    for name, text in texts.items():
        if name.endswith(".gz"):
            (root / name).write_bytes(gzip.compress(text.encode()))
        else:
            (root / name).write_text(text)
    (root / ".hidden").write_text("never read")
    return root, texts


def text_of(corpus) -> str:
    return corpus.vocab.decode(np.asarray(corpus.ids))


def test_a_folder_is_its_files_in_sorted_order_joined_by_the_separator(books, tmp_path):
    root, texts = books
    corpus = prepare(root, root=tmp_path / "cache")
    order = ["a.txt", "b.txt", "b/c.txt.gz"]                 # sorted by their paths inside the folder
    assert text_of(corpus) == "\n".join(texts[n] for n in order)
    assert [f["path"] for f in corpus.meta["files"]] == [str(root / n) for n in order]
    for f in corpus.config_entry()["corpus_files"]:      # size and sha256 of the stored file
        data = open(f["path"], "rb").read()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert corpus.ids.dtype == np.uint8 and isinstance(corpus.ids, np.memmap)
    # a glob and the option repeated, with another separator
    glob = prepare([str(root / "b" / "*.gz"), str(root / "a.txt")], separator="<|>", root=tmp_path / "cache")
    assert text_of(glob) == texts["b/c.txt.gz"] + "<|>" + texts["a.txt"]
    with pytest.raises(CharlmError, match="no files match the corpus pattern"):
        prepare(str(root / "*.md"), root=tmp_path / "cache")
    # the command line: several corpora, and a separator with a backslash escape
    proc = subprocess.run([*CLI, "prepare", str(root / "b.txt"), str(root / "a.txt"), "--separator", "\\t|"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CHARLM_PREPARED_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    made = prepared._open(Path(json.loads(proc.stdout.strip().splitlines()[-1])["folder"]))
    assert text_of(made) == texts["b.txt"] + "\t|" + texts["a.txt"]


def test_a_bad_file_is_named_or_skipped_and_counted(books, tmp_path):
    root, texts = books
    (root / "b" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CharlmError, match=r"image.png: not a text file .*--skip-bad-files"):
        prepare(root, root=tmp_path / "cache")
    proc = subprocess.run([*CLI, "prepare", str(root), "--skip-bad-files"], capture_output=True, text=True,
                          env={**os.environ, "CHARLM_PREPARED_DIR": str(tmp_path / "cache")}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["files"] == 3 and summary["skipped"] == 2 and summary["prepared"]
    assert "latin1.txt: not valid UTF-8 at byte 3 (byte 0xe9)" in proc.stderr
    proc = subprocess.run([*CLI, "prepare", str(root)], capture_output=True, text=True,
                          env={**os.environ, "CHARLM_PREPARED_DIR": str(tmp_path / "cache")}, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and "image.png: not a text file" in proc.stderr


def test_the_cache_is_reused_until_a_file_changes(books, tmp_path):
    root, _ = books
    cache = tmp_path / "cache"
    first = prepare(root, root=cache)
    again = prepare(root, root=cache)
    assert first.fresh and not again.fresh and again.folder == first.folder
    (root / "b.txt").write_text("delta " * 30)           # another size: a new cache, the old one removed
    changed = prepare(root, root=cache)
    assert changed.fresh and changed.folder != first.folder and not first.folder.exists()
    assert "delta" in text_of(changed)
    assert prepare(root, separator="\n\n", root=cache).folder != changed.folder   # settings are in the key
    assert not [p for p in cache.iterdir() if ".part" in p.name]


@pytest.mark.parametrize("how", ["rlimit", "tmpfs"])
def test_a_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path, how):
    from test_limits import file_size_limit, mount_tmpfs

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(300_000, seed=3))
    cache, limit = tmp_path / "cache", None
    if how == "tmpfs":
        why = mount_tmpfs(cache, 64 * 4096)
        if why:
            pytest.skip(f"cannot mount a tmpfs here ({why}); the rlimit variant covers the failing write")
    else:
        limit = file_size_limit(100_000)
    try:
        proc = subprocess.run([*CLI, "prepare", str(corpus)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "CHARLM_PREPARED_DIR": str(cache)}, preexec_fn=limit)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"Error: cannot prepare the corpus in {cache}: ")
        assert ("No space left on device" if how == "tmpfs" else "File too large") in proc.stderr
        assert "nothing was kept" in proc.stderr
        assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(cache)], timeout=30)


def test_preparing_streams_in_bounded_memory(tmp_path):
    """40 MB of text: the process peaks far below the size of the text (read whole, it takes 3x)."""
    corpus = tmp_path / "big.txt"
    piece = make_text(1_000_000, seed=4).encode()
    with open(corpus, "wb") as f:
        for _ in range(40):
            f.write(piece)
    code = ("import resource, sys; from charlm.data.prepared import prepare; "
            f"p = prepare({str(corpus)!r}, root={str(tmp_path / 'cache')!r}); "
            "print(p.characters, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    base = ("import resource, numpy, charlm.data.prepared; "
            "print(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    rss, chars = {}, {}
    for name, source in (("prepare", code), ("import", base)):
        proc = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0, proc.stderr
        chars[name], rss[name] = map(int, proc.stdout.split())
    assert chars["prepare"] == 40 * len(piece)
    assert (rss["prepare"] - rss["import"]) * 1024 < 12e6, rss       # kB; chunks of 1 MB and their copies


CUT = st.tuples(st.lists(st.integers(0, 5), max_size=120), st.integers(1, 17))


@settings(max_examples=60, deadline=None)
@given(CUT)
def test_tokens_cut_piece_by_piece_are_the_whole_texts_cut(case):
    """Across piece boundaries: char, dense bigram, and the sparse greedy cut (which may pair a
    piece's last character with the next piece's first)."""
    values, size = case
    vocab = Vocabulary("abcdef")
    ids = np.array(values, dtype=vocab.dtype)
    for tok in (Tokenizer("char", vocab), Tokenizer("bigram", vocab),
                Tokenizer("bigram", vocab, np.array([[0, 0], [0, 1], [1, 0], [2, 3], [5, 5]]))):
        out = []
        left = cut_tokens(tok, (ids[i:i + size] for i in range(0, ids.size, size)), out.append)
        got = np.concatenate(out) if out else np.zeros(0, tok.dtype)
        assert got.tolist() == tok.tokens(ids).tolist()
        assert left.tolist() == tok.leftover(ids).tolist()


def test_split_and_token_files_match_the_in_memory_ones(tmp_path, monkeypatch):
    """A spread split samples every file; its training tokens equal the in-memory cut's."""
    monkeypatch.setattr(prepared, "CHUNK", 64)            # many pieces
    (tmp_path / "one.txt").write_text("ab " * 2000)
    (tmp_path / "two.txt").write_text("xy " * 2000)
    corpus = prepare([tmp_path / "one.txt", tmp_path / "two.txt"], root=tmp_path / "cache")
    text = "ab " * 2000 + "\n" + "xy " * 2000
    ids = corpus.vocab.encode(text)
    valid, train_ranges = prepared.split(corpus, 1000, "spread")
    want_valid, want_train = split_ids(ids, 1000, "spread")
    assert valid.tolist() == want_valid.tolist()
    assert set(corpus.vocab.decode(valid)) >= set("abxy")          # validation from both files
    for tok in (Tokenizer("char", corpus.vocab), Tokenizer("bigram", corpus.vocab),
                Tokenizer("bigram", corpus.vocab, np.array([[0, 1], [1, 2], [3, 4]]))):
        tokens, _ = token_file(corpus, tok, train_ranges)
        assert isinstance(tokens, np.memmap) and tokens.tolist() == tok.tokens(want_train).tolist()
        assert token_file(corpus, tok, train_ranges)[0].filename == tokens.filename    # made once


def test_training_on_a_prepared_corpus_is_training_on_its_text(tmp_path):
    """Same losses step for step (bigram tokens from a token file, a spread split), the same after a
    resume, and eval --text-file (streamed from disk) gives the in-memory figure."""
    from charlm.training.trainer import train
    from charlm.use.scoring import evaluate

    text = make_text(20000, seed=7, sentences=True)
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    common = dict(kind="bigram", hidden=16, embedding_size=8, batch_size=4, unrollings=21, log_every=2,
                  sample_every=0, valid_size=600, valid_split="spread", checkpoint_every=2, log=lambda line: None)
    mapped = train(corpus=str(path), checkpoint_dir=tmp_path / "mapped", steps=4, **common)
    plain = train(text=text, checkpoint_dir=tmp_path / "plain", steps=6, **common)
    assert [r["loss"] for r in mapped.history] == [r["loss"] for r in plain.history[:2]]
    resumed = train(checkpoint_dir=tmp_path / "mapped", resume=True, steps=6, log=lambda line: None)
    assert resumed.history[-1]["loss"] == plain.history[-1]["loss"]
    config = json.loads((tmp_path / "mapped" / "config.json").read_text())
    assert config["corpus_files"] == [{"path": str(path), "size": len(text),
                                       "sha256": hashlib.sha256(text.encode()).hexdigest()}]
    held = make_text(3001, seed=8)                          # odd: the bigram's leftover character
    (tmp_path / "held.txt").write_text(held)
    streamed, _ = evaluate(tmp_path / "mapped", text_file=tmp_path / "held.txt")
    in_memory, _ = evaluate(tmp_path / "mapped", text=held)
    assert streamed == in_memory


@pytest.mark.parametrize("separator", ["\n", "", "§"])
def test_pieces_of_a_few_bytes_give_the_joined_text(tmp_path, monkeypatch, separator):
    """Files read 7 bytes at a time: ids written while the vocabulary is counted stay only if no
    later piece (or the separator) brings another character; either way the text is the joined one."""
    monkeypatch.setattr(prepared, "READ_BYTES", 7)
    texts = {"1.txt": "abab ba ab", "2.txt": "", "3.txt": "baa b", "4.bin": "ab\0", "5.txt": "ab ζ ba"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    for names in (["1.txt", "3.txt"], ["1.txt", "2.txt", "4.bin", "3.txt"], ["3.txt", "5.txt", "1.txt"]):
        corpus = prepare([tmp_path / n for n in names], separator=separator, skip_bad_files=True,
                         root=tmp_path / "cache")
        kept = [n for n in names if n != "4.bin"]
        assert text_of(corpus) == separator.join(texts[n] for n in kept)
        assert corpus.vocab.chars == "".join(sorted(set(text_of(corpus)) | set(separator * (len(kept) > 1))))
        assert [f["characters"] for f in corpus.meta["files"]] == [len(texts[n]) for n in kept]
