"""BatchGenerator (charlm/batches.py) against the ud730 assignment 6 notebook's semantics.

Notebook: ``batch_size`` cursors start at ``b * (len // batch_size)``; each ``next()`` returns
``num_unrollings + 1`` time-major steps whose first is the previous call's last; cursors wrap.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from charlm.data.batches import BatchGenerator
from charlm.errors import CharlmError
from charlm.data.vocab import Tokenizer, Vocabulary

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
HYPO = settings(max_examples=120, deadline=None)


def notebook_batches(tokens, batch_size, num_unrollings, calls):
    """A plain-Python transcription of the notebook's BatchGenerator (ids instead of one-hots)."""
    tokens = list(tokens)
    size = len(tokens)
    segment = size // batch_size
    cursor = [offset * segment for offset in range(batch_size)]

    def next_batch():
        batch = [tokens[cursor[b]] for b in range(batch_size)]
        for b in range(batch_size):
            cursor[b] = (cursor[b] + 1) % size
        return batch

    last = next_batch()
    out = []
    for _ in range(calls):
        batches = [last] + [next_batch() for _ in range(num_unrollings)]
        last = batches[-1]
        out.append(batches)
    return np.array(out)


# --------------------------------------------------------------------------- pinned examples

def test_exact_batches_alphabet():
    vocab = Vocabulary.from_text(ALPHABET)    # ' ' = 0, 'a' = 1, ..., 'z' = 26: id(pos) = (pos+1) % 27
    ids = vocab.encode(ALPHABET)
    gen = BatchGenerator(ids, batch_size=3, num_unrollings=2)
    # segment = 27 // 3 = 9: rows start at positions 0, 9, 18 ('a', 'j', 's').
    expected = [
        [[1, 10, 19], [2, 11, 20], [3, 12, 21]],     # positions [0,9,18] [1,10,19] [2,11,20]
        [[3, 12, 21], [4, 13, 22], [5, 14, 23]],     # [2,11,20] [3,12,21] [4,13,22]
        [[5, 14, 23], [6, 15, 24], [7, 16, 25]],     # [4,13,22] [5,14,23] [6,15,24]
        [[7, 16, 25], [8, 17, 26], [9, 18, 0]],      # [6,15,24] [7,16,25] [8,17,26]  (26 = ' ')
        [[9, 18, 0], [10, 19, 1], [11, 20, 2]],      # [8,17,26] [9,18,0] [10,19,1]   row 2 wraps
    ]
    for call, want in enumerate(expected):
        batch = gen.next()
        assert batch.shape == (3, 3)
        assert batch.dtype == np.uint8
        assert batch.tolist() == want, f"call {call}"
    # The same, read as text: each row (column b) continues its own stretch of the alphabet.
    gen = BatchGenerator(ids, 3, 2)
    columns = [[vocab.decode(batch[:, b]) for b in range(3)]
               for batch in (gen.next() for _ in range(5))]
    assert columns == [["abc", "jkl", "stu"], ["cde", "lmn", "uvw"], ["efg", "nop", "wxy"],
                       ["ghi", "pqr", "yz "], ["ijk", "rst", " ab"]]
    assert np.array_equal(np.array(expected), notebook_batches(ids, 3, 2, 5))


def test_exact_batches_uneven_segment():
    # 10 tokens, batch 3: segment 3, cursors 0, 3, 6; position 9 is only reached by row 2.
    ids = np.arange(10, dtype=np.uint8)
    gen = BatchGenerator(ids, batch_size=3, num_unrollings=2)
    assert gen.cursors.tolist() == [0, 3, 6]
    assert gen.next().tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert gen.next().tolist() == [[2, 5, 8], [3, 6, 9], [4, 7, 0]]
    assert gen.next().tolist() == [[4, 7, 0], [5, 8, 1], [6, 9, 2]]
    assert gen.next().tolist() == [[6, 9, 2], [7, 0, 3], [8, 1, 4]]
    assert gen.cursors.tolist() == [8, 1, 4]


def test_exact_batches_single_unrolling_wraps_every_row():
    ids = np.array([5, 6, 7, 8], dtype=np.uint16)
    gen = BatchGenerator(ids, batch_size=2, num_unrollings=1)
    got = [gen.next().tolist() for _ in range(4)]
    assert got == [[[5, 7], [6, 8]], [[6, 8], [7, 5]], [[7, 5], [8, 6]], [[8, 6], [5, 7]]]


def test_exact_bigram_batches():
    vocab = Vocabulary.from_text(ALPHABET)
    tok = Tokenizer("bigram", vocab)
    tokens, leftover = tok.encode_text(ALPHABET)
    # Pairs ab cd ef ... yz, ' ' left over; token k = (2k+1) * 27 + (2k+2).
    assert tokens.tolist() == [29, 85, 141, 197, 253, 309, 365, 421, 477, 533, 589, 645, 701]
    assert vocab.decode(leftover) == " "
    gen = BatchGenerator(tokens, batch_size=2, num_unrollings=2)    # segment 6: cursors 0, 6
    expected = [
        [[29, 365], [85, 421], [141, 477]],       # ab/mn cd/op ef/qr
        [[141, 477], [197, 533], [253, 589]],     # ef/qr gh/st ij/uv
        [[253, 589], [309, 645], [365, 701]],     # ij/uv kl/wx mn/yz
        [[365, 701], [421, 29], [477, 85]],       # mn/yz op/ab qr/cd   row 1 wraps
    ]
    batches = [gen.next() for _ in range(4)]
    assert [b.tolist() for b in batches] == expected
    assert all(b.dtype == np.uint16 for b in batches)
    assert tok.decode_tokens(batches[0][:, 0]) == "abcdef"
    assert tok.decode_tokens(batches[3][:, 1]) == "yzabcd"


# --------------------------------------------------------------------------- next_many

def test_next_many_equals_repeated_next():
    ids = Vocabulary.from_text(ALPHABET).encode(ALPHABET)
    one, many = BatchGenerator(ids, 3, 2), BatchGenerator(ids, 3, 2)
    singles = np.stack([one.next() for _ in range(7)])
    block = many.next_many(7)
    assert block.shape == (7, 3, 3)
    assert block.dtype == np.uint8
    assert np.array_equal(block, singles)
    assert one.cursors.tolist() == many.cursors.tolist()
    assert np.array_equal(one.next(), many.next())


def test_next_many_zero_is_empty_and_does_not_move():
    gen = BatchGenerator(np.arange(20), 2, 3)
    assert gen.next_many(0).shape == (0, 4, 2)
    assert gen.cursors.tolist() == [0, 10]
    assert gen.next().tolist() == [[0, 10], [1, 11], [2, 12], [3, 13]]


def test_resume_from_saved_cursors():
    ids = np.arange(50, dtype=np.int32)
    gen = BatchGenerator(ids, 4, 3)
    gen.next_many(5)
    resumed = BatchGenerator(ids, 4, 3, cursors=gen.cursors.copy())
    assert np.array_equal(resumed.next_many(6), gen.next_many(6))


# --------------------------------------------------------------------------- errors and dtypes

def test_too_short_text_raises():
    with pytest.raises(CharlmError, match="batch size") as err:
        BatchGenerator(np.arange(11), batch_size=4, num_unrollings=2)    # needs 4 * 3 = 12
    assert "11 tokens" in str(err.value) and "12" in str(err.value)
    gen = BatchGenerator(np.arange(12), batch_size=4, num_unrollings=2)  # exactly one batch
    assert gen.next().tolist() == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    with pytest.raises(CharlmError, match="batch size"):
        BatchGenerator(np.zeros(0, dtype=np.uint8), 1, 1)


@pytest.mark.parametrize("batch_size, unrollings", [(0, 5), (5, 0), (-1, 2)])
def test_non_positive_sizes_raise(batch_size, unrollings):
    with pytest.raises(CharlmError):
        BatchGenerator(np.arange(100), batch_size, unrollings)


def test_two_dimensional_tokens_rejected():
    with pytest.raises(ValueError):
        BatchGenerator(np.zeros((10, 10), dtype=np.uint8), 2, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.int64])
def test_dtype_preserved(dtype):
    ids = (np.arange(40) * 7 % 251).astype(dtype)
    gen = BatchGenerator(ids, 4, 3)
    assert gen.next().dtype == np.dtype(dtype)
    assert gen.next_many(3).dtype == np.dtype(dtype)


def test_large_array_vectorised():
    n = 10_000_000
    tokens = (np.arange(n, dtype=np.int64) % 251).astype(np.uint8)   # value = position % 251
    gen = BatchGenerator(tokens, batch_size=64, num_unrollings=10)
    block = gen.next_many(1000)
    assert block.shape == (1000, 11, 64) and block.dtype == np.uint8
    segment = n // 64
    k, t, b = np.meshgrid(np.arange(1000), np.arange(11), np.arange(64), indexing="ij")
    assert np.array_equal(block, ((b * segment + k * 10 + t) % n % 251).astype(np.uint8))
    assert gen.cursors.tolist() == [b * segment + 10_000 for b in range(64)]


# --------------------------------------------------------------------------- properties

@st.composite
def generator_setup(draw, exact_segments=False):
    batch_size = draw(st.integers(1, 8))
    unrollings = draw(st.integers(1, 8))
    if exact_segments:
        segment = draw(st.integers(unrollings + 1, 30))
        n = batch_size * segment
    else:
        n = draw(st.integers(batch_size * (unrollings + 1), 200))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int64]))
    seed = draw(st.integers(0, 2**32 - 1))
    tokens = np.random.default_rng(seed).integers(0, np.iinfo(np.uint8).max + 1, n).astype(dtype)
    return tokens, batch_size, unrollings


@HYPO
@given(generator_setup(), st.integers(1, 12))
def test_property_shape_carry_over_and_own_text(setup, calls):
    tokens, batch_size, unrollings = setup
    n = tokens.size
    gen = BatchGenerator(tokens, batch_size, unrollings)
    segment = n // batch_size
    batches = [gen.next() for _ in range(calls)]
    for k, batch in enumerate(batches):
        assert batch.shape == (unrollings + 1, batch_size)
        assert batch.dtype == tokens.dtype
        if k:
            assert np.array_equal(batch[0], batches[k - 1][-1])
        # Row b at step t of call k reads position b * segment + k * unrollings + t (mod n).
        positions = (np.arange(batch_size)[None, :] * segment + k * unrollings
                     + np.arange(unrollings + 1)[:, None]) % n
        assert np.array_equal(batch, tokens[positions])
    assert np.array_equal(np.stack(batches), notebook_batches(tokens, batch_size, unrollings, calls))


@HYPO
@given(generator_setup(), st.lists(st.integers(0, 6), max_size=6))
def test_property_next_many_equals_next(setup, counts):
    tokens, batch_size, unrollings = setup
    by_one, by_block = BatchGenerator(tokens, batch_size, unrollings), \
        BatchGenerator(tokens, batch_size, unrollings)
    total = sum(counts)
    singles = [by_one.next() for _ in range(total)]
    blocks = [by_block.next_many(c) for c in counts]
    assert all(blk.shape == (c, unrollings + 1, batch_size) for blk, c in zip(blocks, counts))
    if total:
        assert np.array_equal(np.concatenate(blocks), np.stack(singles))
    assert by_one.cursors.tolist() == by_block.cursors.tolist()
    assert (by_block.cursors >= 0).all() and (by_block.cursors < tokens.size).all()


@HYPO
@given(generator_setup(), st.integers(1, 10))
def test_property_each_transition_once_per_row(setup, calls):
    # Dropping each call's first step (the carried one), row b's steps are exactly the tokens
    # following its start, in order, with no gap and no repeat.
    tokens, batch_size, unrollings = setup
    n = tokens.size
    block = BatchGenerator(tokens, batch_size, unrollings).next_many(calls)
    segment = n // batch_size
    for b in range(batch_size):
        fresh = block[:, 1:, b].ravel()
        assert np.array_equal(fresh, tokens[(b * segment + 1 + np.arange(calls * unrollings)) % n])


@HYPO
@given(generator_setup(exact_segments=True))
def test_property_coverage(setup):
    # With n == batch_size * segment, after c calls row b has read positions
    # b * segment .. b * segment + c * unrollings, so the rows together cover the whole text
    # exactly when c * unrollings >= segment - 1; one call fewer leaves the last position of
    # every segment unread.
    tokens, batch_size, unrollings = setup
    n = tokens.size
    segment = n // batch_size
    ids = np.arange(n)                       # token value = position
    needed = -(-(segment - 1) // unrollings)
    gen = BatchGenerator(ids, batch_size, unrollings)
    short = gen.next_many(needed - 1)
    read_short = set(short.ravel().tolist())
    per_row = (needed - 1) * unrollings + 1 if needed > 1 else 0    # < segment positions per row
    assert read_short == {b * segment + j for b in range(batch_size) for j in range(per_row)}
    assert not {b * segment + segment - 1 for b in range(batch_size)} & read_short
    full = np.concatenate([short, gen.next_many(1)])
    assert set(full.ravel().tolist()) == set(range(n))
    for b in range(batch_size):
        row = set(full[:, :, b].ravel().tolist())
        assert row == {(b * segment + j) % n for j in range(needed * unrollings + 1)}
        assert set(range(b * segment, (b + 1) * segment)) <= row
