"""Vocabulary, char/bigram tokens and the BatchGenerator (exact batches, properties)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data.batches import BatchGenerator
from charlm.errors import CharlmError
from charlm.data.vocab import Tokenizer, Vocabulary

ALPHA = " abcdefghijklmnopqrstuvwxyz"


def test_vocabulary_is_sorted_unique_and_compact():
    v = Vocabulary.from_text("hello world")
    assert v.chars == " dehlorw"
    ids = v.encode("hello")
    assert ids.dtype == np.uint8 and list(ids) == [3, 2, 4, 4, 5]
    assert v.decode(ids) == "hello"
    big = Vocabulary("".join(chr(0x4E00 + i) for i in range(300)))
    assert big.dtype == np.uint16


def test_unknown_characters_are_named_or_skipped():
    v = Vocabulary.from_text("abc ")
    with pytest.raises(CharlmError) as e:
        v.encode("abЖc!")
    assert "U+0416" in str(e.value) and "'!'" in str(e.value)
    assert v.decode(v.encode("abЖc!", oov="skip")) == "abc"


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_any_unicode_round_trips(text):
    v = Vocabulary.from_text(text)
    assert v.decode(v.encode(text)) == text
    assert Vocabulary.from_dict(v.to_dict()) == v


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=101), st.sampled_from(["char", "bigram"]))
def test_tokens_and_leftover_rebuild_the_text(text, kind):
    v = Vocabulary.from_text(text)
    tok = Tokenizer(kind, v)
    ids = v.encode(text)
    tokens, leftover = tok.tokens(ids), tok.leftover(ids)
    assert tokens.size == len(text) // tok.chars_per_token
    assert leftover.size == len(text) % tok.chars_per_token
    assert tokens.max(initial=0) < tok.num_tokens
    assert tok.decode_tokens(tokens) + v.decode(leftover) == text


def test_bigram_ids_are_pairs():
    v = Vocabulary(ALPHA)
    tok = Tokenizer("bigram", v)
    assert tok.num_tokens == 729
    assert list(tok.tokens(v.encode("abc"))) == [1 * 27 + 2]
    assert list(tok.leftover(v.encode("abc"))) == [3]


def test_batches_match_the_notebook_exactly():
    ids = Vocabulary(ALPHA).encode(ALPHA)              # 27 tokens, ids 0..26
    gen = BatchGenerator(ids, batch_size=3, num_unrollings=2)   # segment 9: cursors 0, 9, 18
    first, second, third = gen.next(), gen.next(), gen.next()
    np.testing.assert_array_equal(first, [[0, 9, 18], [1, 10, 19], [2, 11, 20]])
    np.testing.assert_array_equal(second, [[2, 11, 20], [3, 12, 21], [4, 13, 22]])
    np.testing.assert_array_equal(third, [[4, 13, 22], [5, 14, 23], [6, 15, 24]])
    # the third row wraps around the end of the text
    np.testing.assert_array_equal(gen.next(), [[6, 15, 24], [7, 16, 25], [8, 17, 26]])
    np.testing.assert_array_equal(gen.next(), [[8, 17, 26], [9, 18, 0], [10, 19, 1]])
    assert first.dtype == np.uint8


def test_next_many_equals_repeated_next():
    ids = np.arange(1000, dtype=np.uint16) % 37
    a, b = BatchGenerator(ids, 8, 5), BatchGenerator(ids, 8, 5)
    many = a.next_many(7)
    for k in range(7):
        np.testing.assert_array_equal(many[k], b.next())
    np.testing.assert_array_equal(a.cursors, b.cursors)


def test_too_short_text_is_a_clear_error():
    with pytest.raises(CharlmError, match="batch size 4"):
        BatchGenerator(np.arange(10), 4, 2)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(20, 400), batch=st.integers(1, 6), unroll=st.integers(1, 6), calls=st.integers(1, 12))
def test_rows_follow_their_own_text_and_carry_over(n, batch, unroll, calls):
    if n < batch * (unroll + 1):
        return
    tokens = np.arange(n, dtype=np.int64)
    gen = BatchGenerator(tokens, batch, unroll)
    starts = np.arange(batch) * (n // batch)
    previous = None
    for call in range(calls):
        b = gen.next()
        assert b.shape == (unroll + 1, batch)
        want = (starts[None, :] + call * unroll + np.arange(unroll + 1)[:, None]) % n
        np.testing.assert_array_equal(b, tokens[want])
        if previous is not None:
            np.testing.assert_array_equal(b[0], previous[-1])
        previous = b


def test_one_pass_covers_every_position():
    n, batch, unroll = 120, 4, 5          # segment 30 = 6 calls of 5 steps per row
    gen = BatchGenerator(np.arange(n), batch, unroll)
    seen = set()
    for _ in range(6):
        seen.update(gen.next()[1:].ravel().tolist())
    assert seen == set(range(n))          # every character is a label exactly once per pass
