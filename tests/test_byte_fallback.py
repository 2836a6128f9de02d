"""Byte fallback: characters outside the vocabulary read and written as their UTF-8 bytes
(charlm.data.vocab), scored exactly (charlm.use.scoring) and sampled only as valid UTF-8
(charlm.use.sampling, the SavedModel's generate)."""
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_text

# unseen in the tests' training texts: CJK, 2-, 3- and 4-byte UTF-8 (emoji, a supplementary CJK
# ideograph), a combining mark and a control character
UNSEEN = "é漢字😀𠀋\u0301\x07ü∑"


def zipf_cjk(n: int, distinct: int, seed: int) -> str:
    rng = random.Random(seed)
    alphabet = [chr(0x4E00 + k) for k in range(distinct)]
    return "".join(rng.choices(alphabet, [1.0 / (k + 1) for k in range(distinct)], k=n))


def byte_vocab(text="abcab" * 40 + "中文中文" * 5 + "q", min_count=5):
    from charlm.data.vocab import Vocabulary

    return Vocabulary.from_text(text, min_count=min_count, byte_fallback="on")


# --------------------------------------------------------------------------- the vocabulary

def test_round_trip_of_unseen_characters_is_their_utf8_bytes():
    vocab = byte_vocab()
    assert vocab.chars == "abc中文" and vocab.bytes and vocab.size == 5 + 256   # "q" is rarer than 5
    text = "ab" + UNSEEN + "q中" + UNSEEN[::-1]
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert vocab.characters(ids) == len(text)
    # the ids are the characters' own where known, else their bytes, as Python's encoder writes them
    expected = []
    for ch in text:
        if ch in vocab.chars:
            expected.append(vocab.chars.index(ch))
        else:
            expected += [5 + b for b in ch.encode("utf-8")]
    assert ids.tolist() == expected
    # complete(): the ids of whole characters only, at every cut of the sequence
    ends = np.cumsum([1 if ch in vocab.chars else len(ch.encode("utf-8")) for ch in text])
    for k in range(ids.size + 1):
        assert vocab.complete(ids[:k]) == max([0] + [e for e in ends if e <= k])
    assert vocab.decode(vocab.encode(text, oov="skip")) == "ab中"


def test_oov_choices_and_old_vocabularies():
    from charlm.data.vocab import Vocabulary
    from charlm.errors import CharlmError

    plain = Vocabulary("abc")
    assert plain.to_dict() == {"chars": "abc"} and Vocabulary.from_dict({"chars": "abc"}) == plain
    with pytest.raises(CharlmError, match="--oov skip"):
        plain.encode("abé")                       # a model without byte tokens: error by default
    with pytest.raises(CharlmError, match="byte tokens"):
        plain.encode("abé", oov="bytes")
    vocab = byte_vocab()
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    with pytest.raises(CharlmError, match="outside"):
        vocab.encode("abé", oov="error")


def test_auto_byte_fallback_and_the_text8_sizes():
    from charlm.data.vocab import Tokenizer, Vocabulary

    text8ish = "".join(random.Random(1).choices("abcdefghijklmnopqrstuvwxyz ", k=20000))
    for mode in ("auto", "off"):
        vocab = Vocabulary.from_text(text8ish, min_count=10, byte_fallback=mode)
        assert (vocab.size, vocab.bytes) == (27, False)
        ids = vocab.encode(text8ish)
        assert Tokenizer.for_ids("char", vocab, ids, 20, 16384).num_tokens == 27
        bigram = Tokenizer.for_ids("bigram", vocab, ids, 20, 16384)
        assert bigram.num_tokens == 729 and not bigram.sparse and bigram.to_dict() == {}
    # a small alphabet with a rare tail keeps its characters under auto (English text)
    english = make_text(20000, seed=1, sentences=True)
    assert not Vocabulary.from_text(english, 10, "auto").bytes
    assert Vocabulary.from_text(english, 10, "on").bytes
    # a large alphabet with a rare tail gets byte tokens; its rare characters leave the vocabulary
    cjk = zipf_cjk(20000, 3000, seed=2)
    counts = {c: cjk.count(c) for c in set(cjk)}
    vocab = Vocabulary.from_text(cjk, 10, "auto")
    assert vocab.bytes and set(vocab.chars) == {c for c, n in counts.items() if n >= 10}
    assert vocab.decode(vocab.encode(cjk)) == cjk


# --------------------------------------------------------------------------- the bigram vocabulary

def reference_pairs(ids, vocab, min_count, max_tokens):
    """The pairs kept, one position at a time: candidates from the non-overlapping cut, kept by how
    often the greedy cut with the candidates takes them, the most taken first."""
    from collections import Counter

    c = vocab.num_chars
    even = Counter((int(a), int(b)) for a, b in zip(ids[0:len(ids) - 1:2], ids[1::2]) if a < c and b < c)
    candidates = {p for p, n in even.items() if n >= min_count}
    used, i = Counter(), 0
    while i < len(ids):
        if i + 1 < len(ids) and (int(ids[i]), int(ids[i + 1])) in candidates:
            used[(int(ids[i]), int(ids[i + 1]))] += 1
            i += 2
        else:
            i += 1
    ranked = sorted((p for p in candidates if used[p] >= min_count), key=lambda p: (-used[p], p))
    return sorted(ranked[:max_tokens - vocab.size])


@pytest.mark.parametrize("min_count, max_pairs, fallback", [(20, 16384, "auto"), (3, 16384, "off"),
                                                             (3, 150, "auto"), (1, 100, "off")])
def test_pair_min_count_and_cap(min_count, max_pairs, fallback):
    from charlm.data.vocab import Tokenizer, Vocabulary

    text = zipf_cjk(60000, 3000, seed=3)
    vocab = Vocabulary.from_text(text, 10, fallback)
    ids = vocab.encode(text)
    max_tokens = vocab.size + max_pairs          # the single characters (and bytes) are always tokens
    tok = Tokenizer.for_ids("bigram", vocab, ids, min_count, max_tokens)
    assert tok.sparse and tok.num_tokens <= max_tokens
    if max_pairs < 1000:
        assert tok.num_tokens == max_tokens      # the cap binds
    pairs = sorted(zip(tok.first[vocab.size:].tolist(), tok.second[vocab.size:].tolist()))
    assert pairs == reference_pairs(ids, vocab, min_count, max_tokens)
    assert len(pairs) > 0
    assert tok.decode_tokens(tok.tokens(ids)) == text
    held = zipf_cjk(3000, 4000, seed=4) + UNSEEN
    if vocab.bytes:
        assert tok.decode_tokens(tok.tokens(vocab.encode(held))) == held


def test_default_cjk_vocabulary_is_thousands_not_hundreds_of_thousands():
    """The issue's case at a test's size: 5,750 distinct characters, 200,000 of them."""
    from charlm.data.vocab import Tokenizer, Vocabulary

    text = zipf_cjk(200000, 5750, seed=5)
    vocab = Vocabulary.from_text(text, 10, "auto")
    ids = vocab.encode(text)
    everything = Tokenizer.for_ids("bigram", Vocabulary.from_text(text), Vocabulary.from_text(text).encode(text))
    capped = Tokenizer.for_ids("bigram", vocab, ids, 20, 16384)
    assert everything.num_tokens > 40000
    assert 256 < capped.num_tokens < 5000 and vocab.bytes


# --------------------------------------------------------------------------- the UTF-8 automaton

def accepts(follow, c, data: bytes) -> bool:
    state = 0
    for b in data:
        state = follow[state, c + b]
        if state < 0:
            return False
    return state == 0


def test_automaton_accepts_exactly_valid_utf8():
    from charlm.data.vocab import Tokenizer

    vocab = byte_vocab()
    tok = Tokenizer("char", vocab)
    follow, made = tok.utf8_grammar()
    c = vocab.num_chars

    def valid(data):
        try:
            data.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    for first in range(256):
        assert accepts(follow, c, bytes([first])) == valid(bytes([first]))
        for second in range(256):
            data = bytes([first, second])
            assert accepts(follow, c, data) == valid(data), data
    rng = np.random.default_rng(0)
    for _ in range(20000):
        n = int(rng.integers(3, 5))
        lead = int(rng.choice([0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, int(rng.integers(0xC0, 0x100))]))
        data = bytes([lead, *rng.integers(0x70, 0xC8, n - 1).tolist()])
        assert accepts(follow, c, data) == valid(data), data
    # a character token only between characters; it completes one character, a final byte one too
    assert (follow[0, :c] == 0).all() and (follow[1:, :c] == -1).all() and (made[0, :c] == 1).all()
    assert made[1, c + 0x80] == 1 and made[2, c + 0x80] == 0


def untrained_sampler(kind, output="full"):
    from charlm.config import ModelConfig
    from charlm.data.vocab import Tokenizer
    from charlm.nn.model import CharLM
    from charlm.use.sampling import Sampler

    vocab = byte_vocab()
    tok = Tokenizer.for_ids(kind, vocab, vocab.encode("abcab" * 40 + "中文中文" * 5), 2)
    adaptive = dict(softmax="adaptive", softmax_cutoffs=[4, 40]) if output == "adaptive" else {}
    rank = np.random.default_rng(2).permutation(tok.num_tokens) if adaptive else None
    model = CharLM(ModelConfig(kind=kind, hidden=8, embedding_size=4, **adaptive), tok.num_tokens, seed=1,
                   token_rank=rank)
    return Sampler(model, tok)


@pytest.mark.parametrize("kind,output", [("char", "full"), ("bigram", "full"), ("char", "adaptive")])
def test_sampler_emits_only_whole_characters(kind, output):
    """An untrained model spreads its picks over the 256 byte tokens, so most characters are
    written byte by byte: the text must still be valid UTF-8 of exactly the length asked (an
    adaptive softmax picks over its columns by rank, the automaton's masks reordered to match)."""
    sampler = untrained_sampler(kind, output)
    vocab = sampler.tokenizer.vocab
    outside = 0
    for seed in range(6):
        for prime in ("", "a", "a中", "😀"):
            for text in sampler.generate(prime=prime, length=40, seed=seed, num_samples=3):
                assert text.startswith(prime) and len(text) == len(prime) + 40
                assert "\ufffd" not in text and not any(0xD800 <= ord(ch) < 0xE000 for ch in text)
                assert text.encode("utf-8").decode("utf-8") == text
                outside += sum(ch not in vocab.chars for ch in text[len(prime):])
    assert outside > 500                      # written from bytes, most of them several
    # streamed: each piece whole characters, together the same text
    pieces = list(sampler.stream(prime="中", length=300, seed=7, num_samples=2, chunk_seconds=1e-4))
    assert len(pieces) > 3
    for row in range(2):
        assert "".join(p[row] for p in pieces) == sampler.generate(prime="中", length=300, seed=7, num_samples=2)[row]
        assert all("\ufffd" not in p[row] for p in pieces)


# --------------------------------------------------------------------------- runs: eval, sample, export

@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    from charlm.training.trainer import train

    root = tmp_path_factory.mktemp("bytes")
    text = zipf_cjk(12000, 800, seed=6)
    (root / "train.txt").write_text(text, encoding="utf-8")
    train(corpus=str(root / "train.txt"), checkpoint_dir=root / "run", hidden=16, batch_size=8, unrollings=10,
          steps=10, optimizer="adam", learning_rate=0.01, sample_every=0, log_every=10, valid_size=500,
          log=lambda m: None)
    return root


def test_file_and_text_runs_have_the_same_vocabulary(byte_run):
    """The prepared (memory-mapped) corpus and the in-memory text choose the same ids."""
    from charlm.data import prepared
    from charlm.data.vocab import Vocabulary
    from charlm.run.checkpoint import read_run_config

    info = read_run_config(byte_run / "run")
    text = (byte_run / "train.txt").read_text(encoding="utf-8")
    in_memory = Vocabulary.from_text(text, 10, "auto")
    assert info["vocabulary"] == in_memory and in_memory.bytes
    corpus = prepared.prepare_for(str(byte_run / "train.txt"), in_memory)
    assert np.array_equal(np.asarray(corpus.ids), in_memory.encode(text))


def test_eval_scores_every_character_of_unseen_text(byte_run):
    from charlm.run.checkpoint import load_model
    from charlm.use.scoring import Scorer, evaluate

    run = byte_run / "run"
    text = (UNSEEN * 4) + "中" + zipf_cjk(50, 20000, seed=9)[::-1]
    score, tok = evaluate(run, text=text)               # --oov bytes, the default with byte tokens
    assert score.characters == len(text) and score.tokens > len(text)
    assert np.isfinite(score.nats_per_char) and score.nats_per_char > 0
    # from a file, streamed from disk: the same figure
    (byte_run / "held.txt").write_text(text, encoding="utf-8")
    from_file, _ = evaluate(run, text_file=byte_run / "held.txt")
    assert from_file.characters == len(text) and from_file.nats == pytest.approx(score.nats, rel=1e-6)
    # skipping instead: only the known characters count
    skipped, _ = evaluate(run, text=text, oov="skip")
    assert skipped.characters == sum(ch in tok.vocab.chars for ch in text)
    # a changed character changes nothing before it
    model, tok, _ = load_model(run)
    scorer = Scorer(model, tok, streams=1)
    other = text[:20] + "Ж" + text[21:]
    for k in (12, 20, 21, 27):
        same = scorer.score_text(text[:k]).nats == pytest.approx(scorer.score_text(other[:k]).nats, abs=1e-9)
        assert same == (k <= 20) or text[20] == "Ж"


def test_cli_eval_sample_and_export(byte_run, tmp_path):
    from cli import main

    run = byte_run / "run"
    (tmp_path / "held.txt").write_text(UNSEEN * 3, encoding="utf-8")
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--text-file", str(tmp_path / "held.txt"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["characters"] == len(UNSEEN) * 3
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(run), "--length", "30", "--prime", "😀",
                                       "--seed", "3"])
    # after the line naming the run, the sample (any character, newlines too) and a newline
    sampled = result.output.split("sampling from", 1)[1].split("\n", 1)[1][:-1]
    assert result.exit_code == 0 and sampled.startswith("😀") and len(sampled) == 31, result.output
    for fmt in ("web", "tflite"):
        result = CliRunner().invoke(main, ["export", "--checkpoint", str(run), "--format", fmt,
                                           "--output", str(tmp_path / fmt)])
        assert result.exit_code == 1 and "byte tokens" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / fmt).exists()


def test_savedmodel_generates_and_scores_with_bytes(byte_run, tmp_path):
    import tensorflow as tf
    from charlm.use.export import export
    from charlm.use.scoring import evaluate

    run = byte_run / "run"
    module = tf.saved_model.load(str(export(run, tmp_path / "saved")))
    for seed in range(4):
        tf.random.set_seed(seed)
        for prime in ("", "😀", "中"):
            text = module.generate(prime=tf.constant(prime), length=tf.constant(25),
                                   temperature=tf.constant(1.5)).numpy().decode("utf-8")
            assert text.startswith(prime) and len(text) == len(prime) + 25 and "\ufffd" not in text
    held = UNSEEN + "中中"
    score, _ = evaluate(run, text=held)
    assert float(module.score(text=tf.constant(held))) == pytest.approx(score.nats_per_char, rel=1e-4)


def test_old_run_folder_loads_and_scores_as_before(tmp_path):
    """A config.json from before byte fallback (no vocabulary settings, no byte_fallback) loads as a
    vocabulary of characters only, with --oov error its default."""
    from test_portable_export import TEXT, make_run

    from charlm.errors import CharlmError
    from charlm.use.scoring import evaluate

    run = tmp_path / "run"
    make_run(run)
    before, _ = evaluate(run, text=TEXT[:300])
    config = json.loads((run / "config.json").read_text())
    assert "byte_fallback" not in config["vocab"]
    for field in ("byte_fallback", "min_char_count", "min_pair_count", "max_tokens"):
        del config["train"][field]
    (run / "config.json").write_text(json.dumps(config))
    after, tok = evaluate(run, text=TEXT[:300])
    assert after.nats == before.nats and not tok.vocab.bytes and tok.num_tokens == len(set(TEXT))
    with pytest.raises(CharlmError, match="--oov skip"):
        evaluate(run, text=TEXT[:30] + "漢")
