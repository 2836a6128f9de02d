"""Vocabulary, Tokenizer, smallest_uint and describe_chars (charlm/vocab.py)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from charlm.errors import CharlmError
from charlm.data.vocab import TOKENIZATIONS, Tokenizer, Vocabulary, describe_chars, smallest_uint

ALPHABET = "abcdefghijklmnopqrstuvwxyz "     # 27 characters, text8's alphabet
HYPO = settings(max_examples=100, deadline=None)

# Text without lone surrogates (st.text()'s default): every code point category, all planes.
# Bare st.characters() also draws lone surrogates (U+D800..U+DFFF): see the surrogate tests.
chars_utf8 = st.characters(codec="utf-8")
any_text = st.text()
astral_text = st.text(alphabet=st.characters(min_codepoint=0x10000), min_size=1)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF))
ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F))
unique_chars = st.lists(chars_utf8, min_size=1, max_size=40, unique=True).map("".join)


# --------------------------------------------------------------------------- smallest_uint

@pytest.mark.parametrize("value, dtype", [
    (0, np.uint8), (1, np.uint8), (255, np.uint8),
    (256, np.uint16), (65535, np.uint16),
    (65536, np.uint32), (2**32 - 1, np.uint32),
    (2**32, np.uint64), (2**64 - 1, np.uint64),
])
def test_smallest_uint_boundaries(value, dtype):
    got = smallest_uint(value)
    assert got == np.dtype(dtype)
    assert isinstance(got, np.dtype)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_smallest_uint_is_smallest_that_fits(value):
    got = smallest_uint(value)
    assert value <= np.iinfo(got).max
    narrower = [d for d in (np.uint8, np.uint16, np.uint32, np.uint64)
                if np.dtype(d).itemsize < got.itemsize]
    assert all(value > np.iinfo(d).max for d in narrower)


# --------------------------------------------------------------------------- describe_chars

def test_describe_chars_names_and_code_points():
    assert describe_chars("Ж") == "'Ж' (U+0416 CYRILLIC CAPITAL LETTER ZHE)"
    # Whitespace and control characters are shown escaped; U+0009 has no unicodedata name.
    assert describe_chars("\t") == "'\\t' (U+0009)"
    assert describe_chars("a\n") == "'a' (U+0061 LATIN SMALL LETTER A), '\\n' (U+000A)"
    assert describe_chars("\U0001F600") == "'\U0001F600' (U+1F600 GRINNING FACE)"
    assert describe_chars("") == ""


# --------------------------------------------------------------------------- Vocabulary

def test_from_text_sorted_unique_chars():
    v = Vocabulary.from_text("hello world")
    assert v.chars == " dehlorw"
    assert len(v) == v.size == 8
    assert v.dtype == np.uint8
    assert Vocabulary.from_text(ALPHABET[::-1] * 3).chars == " " + ALPHABET[:-1]


def test_from_text_non_latin1_sorted_by_code_point():
    v = Vocabulary.from_text("жaЖ\U0001F600é a")
    assert v.chars == " aéЖж\U0001F600"
    assert [ord(c) for c in v.chars] == sorted(ord(c) for c in v.chars)


@HYPO
@given(st.text(min_size=1))
def test_from_text_is_sorted_set_of_chars(text):
    v = Vocabulary.from_text(text)
    assert v.chars == "".join(sorted(set(text)))
    assert v.size == len(set(text))


def test_empty_vocabulary_is_an_error():
    with pytest.raises(CharlmError, match="empty"):
        Vocabulary("")
    with pytest.raises(CharlmError, match="empty"):
        Vocabulary.from_text("")


def test_duplicate_characters_are_an_error():
    with pytest.raises(CharlmError, match="unique"):
        Vocabulary("abca")


def test_encode_ascii_known_ids():
    v = Vocabulary(ALPHABET)     # given order, not sorted: 'a' = 0, ' ' = 26
    ids = v.encode("abc zy")
    assert ids.dtype == np.uint8
    assert ids.tolist() == [0, 1, 2, 26, 25, 24]
    assert v.decode(ids) == "abc zy"


def test_encode_respects_given_unsorted_order_on_every_path():
    chars = "ÿzЖa\U0001F600 é"
    v = Vocabulary(chars)
    for text in ("za a", "éÿ a", "Жa\U0001F600ÿ", "\U0001F600\U0001F600"):
        assert v.encode(text).tolist() == [chars.index(c) for c in text]
        assert v.decode(v.encode(text)) == text


def test_encode_latin1_text_with_vocabulary_beyond_latin1():
    # Latin-1 text (uint8 code points) looked up in a vocabulary that has non-Latin-1 characters.
    v = Vocabulary.from_text("abcé\u0416")
    assert v.encode("éba").tolist() == [3, 1, 0]
    with pytest.raises(CharlmError, match="U\\+0078"):
        v.encode("abx")


def test_encode_non_latin1_text_with_latin1_vocabulary():
    v = Vocabulary.from_text("abc")
    with pytest.raises(CharlmError) as err:
        v.encode("a\U0001F600b")
    assert "U+1F600" in str(err.value)
    assert v.encode("a\U0001F600b", oov="skip").tolist() == [0, 1]


def test_encode_empty_text():
    v = Vocabulary.from_text(ALPHABET)
    ids = v.encode("")
    assert ids.shape == (0,)
    assert ids.dtype == v.dtype
    assert v.decode(ids) == ""


def test_unknown_chars_error_names_them():
    v = Vocabulary.from_text(ALPHABET)
    with pytest.raises(CharlmError) as err:
        v.encode("abc Жd\tЖ", what="the prime")
    msg = str(err.value)
    assert "'Ж'" in msg and "U+0416" in msg
    assert "U+0009" in msg
    assert "2 character(s)" in msg
    assert msg.startswith("the prime has")
    assert "\n" not in msg
    # Skipping drops exactly the unknown characters.
    assert v.decode(v.encode("abc Жd\tЖ", oov="skip")) == "abc d"


def test_unknown_chars_message_truncated_after_ten():
    v = Vocabulary("a")
    unknown = "bcdefghijklm"    # 12 unknown characters
    with pytest.raises(CharlmError) as err:
        v.encode("a" + unknown)
    msg = str(err.value)
    assert "12 character(s)" in msg
    assert all(f"U+{ord(c):04X}" in msg for c in unknown[:10])
    assert "U+006C" not in msg and "U+006D" not in msg   # 'l', 'm': the 11th and 12th
    assert " ..." in msg


# a lone surrogate is what Python puts in sys.argv for an invalid UTF-8 byte (`--prime $'\xff'`)
@pytest.mark.parametrize("oov", ["error", "skip"])
def test_lone_surrogate_is_an_unknown_character(oov):
    v = Vocabulary.from_text(ALPHABET)
    if oov == "skip":
        assert v.decode(v.encode("ab\udcffc", oov="skip")) == "abc"
    else:
        with pytest.raises(CharlmError, match="U\\+DCFF"):
            v.encode("ab\udcffc")


@HYPO
@given(st.text(alphabet=st.characters(), min_size=1))
def test_round_trip_text_with_lone_surrogates(text):
    # Any Python str, lone surrogates included, round-trips through its own vocabulary.
    v = Vocabulary.from_text(text)
    assert v.chars == "".join(sorted(set(text)))
    assert v.decode(v.encode(text)) == text


def test_unknown_chars_in_order_of_first_appearance():
    v = Vocabulary.from_text("abc")
    assert v.unknown_chars("zaxzyb") == ["z", "x", "y"]
    assert v.unknown_chars("abcabc") == []


def test_oov_skip_everything_unknown():
    v = Vocabulary.from_text("abc")
    ids = v.encode("xyz", oov="skip")
    assert ids.shape == (0,) and ids.dtype == np.uint8


@pytest.mark.parametrize("size, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                         (65536, np.uint16), (65537, np.uint32)])
def test_vocabulary_dtype_smallest_that_fits(size, dtype):
    chars = "".join(chr(0x10000 + i) for i in range(size))   # astral plane, no surrogates
    v = Vocabulary(chars)
    assert v.dtype == np.dtype(dtype)
    ids = v.encode(chars[::-1] + chars[:3])
    assert ids.dtype == np.dtype(dtype)
    assert ids[0] == size - 1 and ids[-1] == min(2, size - 1)
    assert v.decode(ids) == chars[::-1] + chars[:3]


def test_all_256_latin1_characters_fit_uint8():
    text = "".join(chr(i) for i in range(256))
    v = Vocabulary.from_text(text[::-1])
    assert v.chars == text
    assert v.dtype == np.uint8
    assert v.encode(text).tolist() == list(range(256))


@HYPO
@given(any_text)
def test_round_trip_any_text(text):
    if not text:
        return
    v = Vocabulary.from_text(text)
    ids = v.encode(text)
    assert ids.dtype == v.dtype == smallest_uint(v.size - 1)
    assert ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert ids.tolist() == [v.chars.index(c) for c in text]


@HYPO
@given(st.one_of(astral_text, latin1_text.filter(bool), ascii_text.filter(bool)))
def test_round_trip_astral_latin1_ascii(text):
    v = Vocabulary.from_text(text)
    assert v.decode(v.encode(text)) == text


@HYPO
@given(unique_chars, st.data())
def test_encode_matches_dict_reference_with_unknowns(chars, data):
    v = Vocabulary(chars)
    known = st.sampled_from(chars)
    other = chars_utf8.filter(lambda c: c not in chars)
    text = data.draw(st.text(alphabet=st.one_of(known, other), max_size=30))
    index = {c: i for i, c in enumerate(chars)}
    unknown = list(dict.fromkeys(c for c in text if c not in index))
    assert v.unknown_chars(text) == unknown

    skipped = v.encode(text, oov="skip")
    assert skipped.dtype == v.dtype
    assert skipped.tolist() == [index[c] for c in text if c in index]
    if unknown:
        with pytest.raises(CharlmError) as err:
            v.encode(text)
        msg = str(err.value)
        assert f"{len(unknown)} character(s)" in msg
        assert all(f"U+{ord(c):04X}" in msg for c in unknown[:10])
    else:
        assert v.encode(text).tolist() == skipped.tolist()


@HYPO
@given(unique_chars)
def test_to_dict_from_dict_round_trip(chars):
    v = Vocabulary(chars)
    data = json.loads(json.dumps(v.to_dict()))
    w = Vocabulary.from_dict(data)
    assert w == v
    assert w.chars == chars
    assert w.dtype == v.dtype
    assert w.encode(chars).tolist() == list(range(len(chars)))


def test_vocabulary_equality():
    assert Vocabulary("ab") == Vocabulary("ab")
    assert Vocabulary("ab") != Vocabulary("ba")
    assert Vocabulary("ab") != "ab"


# --------------------------------------------------------------------------- Tokenizer

def test_tokenizations():
    assert TOKENIZATIONS == ("char", "bigram")
    with pytest.raises(CharlmError, match="trigram"):
        Tokenizer("trigram", Vocabulary("ab"))


def test_num_tokens_and_dtype():
    v = Vocabulary.from_text(ALPHABET)
    char, bigram = Tokenizer("char", v), Tokenizer("bigram", v)
    assert (char.num_tokens, char.chars_per_token, char.dtype) == (27, 1, np.uint8)
    assert (bigram.num_tokens, bigram.chars_per_token, bigram.dtype) == (729, 2, np.uint16)


def test_char_tokens_are_ids():
    v = Vocabulary.from_text(ALPHABET)
    tok = Tokenizer("char", v)
    ids = v.encode("hello world")
    tokens, leftover = tok.encode_text("hello world")
    assert tokens.tolist() == ids.tolist() == [8, 5, 12, 12, 15, 0, 23, 15, 18, 12, 4]
    assert tokens.dtype == np.uint8
    assert leftover.size == 0
    assert tok.chars(tokens).tolist() == ids.tolist()
    assert tok.decode_tokens(tokens) == "hello world"
    assert tok.decode_tokens(8) == "h"


def test_bigram_tokens_even_text():
    v = Vocabulary.from_text(ALPHABET)       # ' ' = 0, 'a' = 1, ..., 'z' = 26
    tok = Tokenizer("bigram", v)
    ids = v.encode("abba z")
    tokens = tok.tokens(ids)
    assert tokens.tolist() == [1 * 27 + 2, 2 * 27 + 1, 0 * 27 + 26]
    assert tokens.dtype == np.uint16
    assert tok.leftover(ids).size == 0
    assert tok.chars(tokens).tolist() == ids.tolist()
    assert tok.decode_tokens(tokens) == "abba z"
    assert tok.decode_tokens(29) == "ab"
    assert tok.decode_tokens(np.uint16(728)) == "zz"


def test_bigram_odd_text_leftover_is_last_char():
    v = Vocabulary.from_text(ALPHABET)
    tok = Tokenizer("bigram", v)
    tokens, leftover = tok.encode_text("abc")
    assert tokens.tolist() == [29]
    assert leftover.tolist() == [3]          # 'c'
    assert tok.decode_tokens(tokens) + v.decode(leftover) == "abc"
    tokens, leftover = tok.encode_text("x")
    assert tokens.size == 0 and v.decode(leftover) == "x"
    tokens, leftover = tok.encode_text("")
    assert tokens.size == 0 and leftover.size == 0
    assert tok.decode_tokens(tokens) == ""


@pytest.mark.parametrize("size", [1, 2, 15, 16, 17, 255, 256, 257])
def test_bigram_tokens_enumerate_all_pairs(size):
    # Every pair (a, b) in lexicographic order is token a * V + b: exactly 0 .. V**2 - 1, also at
    # the dtype boundaries (V = 16: 256 tokens in uint8; V = 256: 65536 tokens in uint16).
    v = Vocabulary("".join(chr(0x100 + i) for i in range(size)))
    tok = Tokenizer("bigram", v)
    a, b = np.divmod(np.arange(size * size), size)
    ids = np.stack([a, b], axis=-1).ravel().astype(v.dtype)
    tokens = tok.tokens(ids)
    assert tok.num_tokens == size * size
    assert tokens.dtype == tok.dtype == smallest_uint(size * size - 1)
    assert np.array_equal(tokens, np.arange(size * size))
    assert np.array_equal(tok.chars(tokens), ids)


def test_bigram_chars_of_2d_tokens_row_by_row():
    v = Vocabulary.from_text(ALPHABET)
    tok = Tokenizer("bigram", v)
    tokens = np.array([[29, 55, 26], [728, 0, 1]], dtype=np.uint16)
    chars = tok.chars(tokens)
    assert chars.shape == (2, 6)
    assert v.decode(chars[0]) == "abba z" and v.decode(chars[1]) == "zz   a"
    for row in range(2):
        assert np.array_equal(chars[row], tok.chars(tokens[row]))


@HYPO
@given(unique_chars, st.sampled_from(TOKENIZATIONS), st.data())
def test_tokenizer_round_trip_any_length(chars, kind, data):
    v = Vocabulary(chars)
    tok = Tokenizer(kind, v)
    text = data.draw(st.text(alphabet=st.sampled_from(chars), max_size=41))
    tokens, leftover = tok.encode_text(text)
    k = tok.chars_per_token
    assert tokens.shape == (len(text) // k,)
    assert tokens.dtype == tok.dtype
    assert leftover.shape == (len(text) % k,)
    assert v.decode(leftover) == text[len(text) // k * k:]
    assert (tokens.astype(np.int64) < tok.num_tokens).all()
    assert tok.decode_tokens(tokens) + v.decode(leftover) == text
    ids = v.encode(text)
    assert np.array_equal(np.concatenate([tok.chars(tokens), leftover]).astype(np.int64), ids)
    if kind == "bigram":
        expected = [chars.index(text[i]) * len(chars) + chars.index(text[i + 1])
                    for i in range(0, len(text) - 1, 2)]
        assert tokens.tolist() == expected
