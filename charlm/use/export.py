"""Export: a run folder as a model that runs without charlm (SavedModel here; web and LiteRT beside).

``m = tf.saved_model.load(OUT)`` then
``m.generate(prime=tf.constant("ROMEO:"), length=tf.constant(200), temperature=tf.constant(1.0))``
returns a scalar string: the prime followed by exactly ``length`` generated characters (characters
of the prime the model never saw are dropped), and ``m.score(text=...)`` the text's nats per
character.  ``generate`` also takes ``top_k`` (int32, 0: off), ``top_p`` (float32, 1: off) and
``stop`` (a string, "": none; the text ends after its first occurrence), as ``charlm.sample``
does; called from Python they may be left out.  The vocabulary travels inside the graph as a lookup table; the sampling loop is the
one ``charlm.use.sampling`` uses.  A model with byte tokens reads the characters it does not know
as their UTF-8 bytes (so it drops none) and generates through the UTF-8 automaton, as
``charlm.sample`` does.  The web and LiteRT exports take models without byte tokens only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from charlm.errors import CharlmError
from charlm.data.vocab import greedy_pairs
from charlm.use.sampling import sample_loop
from charlm.use.scoring import open_pair_nats


class _GraphOps:
    """What :func:`charlm.data.vocab.greedy_pairs` needs, in TensorFlow ops."""
    concat = staticmethod(lambda parts: tf.concat(parts, 0))
    arange = staticmethod(lambda a: tf.range(tf.size(a)))
    mask = staticmethod(tf.boolean_mask)
    gather = staticmethod(tf.gather)
    cumsum = staticmethod(lambda a: tf.cumsum(tf.cast(a, tf.int32)))


GRAPH_OPS = _GraphOps


class ExportedModel(tf.Module):
    def __init__(self, model, tokenizer):
        super().__init__(name="charlm_export")
        self.model = model
        self.tokenizer = tokenizer
        vocab = tokenizer.vocab
        self.vocab_size = vocab.size
        self.num_chars = vocab.num_chars
        self.bytes = vocab.bytes
        self.pair = tokenizer.kind == "bigram"
        self.sparse = tokenizer.sparse
        codes = np.array([ord(c) for c in vocab.chars], dtype=np.int32)
        self.codes = tf.constant(codes)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(codes), tf.range(vocab.num_chars, dtype=tf.int32)), -1)
        if self.bytes:
            # each id's UTF-8 text: the characters', then the single bytes
            self.unit_bytes = tf.constant([c.encode("utf-8", "surrogatepass") for c in vocab.chars]
                                          + [bytes([b]) for b in range(256)])
            self.grammar = tuple(tf.constant(t) for t in tokenizer.utf8_grammar())
        if self.sparse:
            # the sparse bigram layout: pair key a * V + b -> token, and each token's characters
            keys = tokenizer.first[vocab.size:] * vocab.size + tokenizer.second[vocab.size:]
            self.pair_table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys, tf.int64), tf.range(vocab.size, tokenizer.num_tokens, dtype=tf.int32)), -1)
            self.first = tf.constant(tokenizer.first, tf.int32)
            self.second = tf.constant(tokenizer.second, tf.int32)

    def _prime(self, text):
        """Known character ids of ``text`` (with byte ids: every character's ids), its tokens and
        its leftover (bigram) character."""
        ids = self.table.lookup(tf.strings.unicode_decode(text, "UTF-8"))
        ids = self._with_bytes(text, ids) if self.bytes else tf.boolean_mask(ids, ids >= 0)
        if not self.pair:
            return ids, ids, tf.zeros([0], tf.int32)
        if self.sparse:
            return (ids, self._greedy(ids), tf.zeros([0], tf.int32))
        n = tf.size(ids) // 2 * 2
        pairs = tf.reshape(ids[:n], [-1, 2])
        return ids, pairs[:, 0] * self.vocab_size + pairs[:, 1], ids[n:]

    def _with_bytes(self, text, ids):
        """``ids`` with each unknown character (-1) replaced by its UTF-8 byte ids."""
        pieces = tf.strings.bytes_split(tf.strings.unicode_split(text, "UTF-8"))     # [chars, bytes]
        values = tf.cast(tf.io.decode_raw(tf.strings.reduce_join(pieces.flat_values), tf.uint8), tf.int32) \
            + self.num_chars
        row = pieces.value_rowids()
        first = tf.range(tf.size(values, out_type=tf.int64)) == tf.gather(pieces.row_splits, row)
        known = tf.gather(ids, row)
        return tf.boolean_mask(tf.where(known >= 0, known, values), first | (known < 0))

    def _greedy(self, ids):
        """The tokenizer's sparse cut (:func:`charlm.data.vocab.greedy_pairs`) in graph ops."""
        n = tf.size(ids)
        keys = tf.cast(ids[:-1], tf.int64) * self.vocab_size + tf.cast(ids[1:], tf.int64)
        token = tf.concat([self.pair_table.lookup(keys), [-1]], 0)[:n]
        pair, single = greedy_pairs(token >= 0, GRAPH_OPS)
        return tf.boolean_mask(tf.where(pair, token, ids), tf.logical_or(pair, single))

    def _read(self, tokens):
        """Feed tokens one by one from the zero state; return the logits after each ``[n+1, V]``."""
        model = self.model
        weights = model.step_weights()
        n = tf.size(tokens)
        history = tf.TensorArray(model.dtype, size=n + 1)
        history = history.write(0, model.initial_logits()[None, :])

        def body(i, state, history):
            logits, state = model.step(weights, tokens[i][None], state)
            return i + 1, state, history.write(i + 1, logits)

        _, state, history = tf.while_loop(lambda i, *_: i < n, body, (0, model.zero_state(1), history))
        return history.stack()[:, 0, :], state

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.string)])
    def generate(self, prime, length, temperature, top_k=tf.constant(0), top_p=tf.constant(1.0),
                 stop=tf.constant("")):
        ids, tokens, leftover = self._prime(prime)
        if self.sparse:
            # a cut ending in a single character leaves it open, as charlm.use.sampling does
            last = tf.concat([[self.vocab_size], tokens], 0)[-1]      # no token: not open
            odd = last < self.num_chars
            first = tf.where(odd, last, -1)
            tokens = tf.cond(odd, lambda: tokens[:-1], lambda: tokens)
        logits, state = self._read(tokens)
        length = tf.maximum(length, 0)
        num = self.model.num_tokens
        if self.sparse:
            first_mask = tf.logical_or(tf.logical_not(odd), tf.equal(self.first, first))
        elif self.pair:
            odd = tf.size(leftover) > 0
            first = tf.cond(odd, lambda: leftover[0], lambda: tf.constant(-1))
            first_mask = tf.logical_or(tf.logical_not(odd), tf.range(num) // self.vocab_size == first)
        else:
            odd = tf.constant(False)
            first_mask = tf.ones([num], tf.bool)
        steps = self.tokenizer.sample_steps(length, tf.cast(odd, tf.int32))
        seed = tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int64)
        last = tf.reshape(logits[-1], [1, num])
        # a top_p outside (0, 1] keeps every token, as 1 does
        top_p = tf.where(top_p > 0, top_p, 1.0)
        grammar = {}
        if self.bytes:          # up to four byte tokens a character; the loop ends with the text
            grammar = dict(grammar=(*self.grammar, tf.zeros([1], tf.int32)), need=length + tf.cast(odd, tf.int32))
            steps *= 4
        out = sample_loop(self.model, last, state, steps, temperature, tf.maximum(top_k, 0), seed,
                          first_mask, top_p=top_p, **grammar)[0][:, 0]
        if self.sparse:
            chars = tf.reshape(tf.stack([tf.gather(self.first, out), tf.gather(self.second, out)], axis=1), [-1])
            chars = tf.boolean_mask(chars, chars >= 0)
            chars = tf.cond(odd, lambda: chars[1:], lambda: chars)
        elif self.pair:
            chars = tf.reshape(tf.stack([out // self.vocab_size, out % self.vocab_size], axis=1), [-1])
            chars = tf.cond(odd, lambda: chars[1:], lambda: chars)
        else:
            chars = out
        if self.bytes:          # the ids' bytes, whole characters by the automaton
            made = tf.strings.unicode_decode(tf.strings.reduce_join(tf.gather(self.unit_bytes, chars)), "UTF-8")
            made = tf.cond(odd, lambda: made[1:], lambda: made)[:length]
            prime_codes = tf.strings.unicode_decode(prime, "UTF-8")
            text = tf.concat([prime_codes, made], axis=0)
            return tf.strings.unicode_encode(until_stop(text, tf.size(prime_codes), stop), "UTF-8")
        chars = chars[:length]
        text = tf.concat([tf.gather(self.codes, ids), tf.gather(self.codes, chars)], axis=0)
        return tf.strings.unicode_encode(until_stop(text, tf.size(ids), stop), "UTF-8")

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def score(self, text):
        """Nats per character of ``text`` (unknown characters dropped), the state carried through."""
        ids, tokens, leftover = self._prime(text)
        logits, _ = self._read(tokens)
        logp = tf.nn.log_softmax(tf.cast(logits, tf.float64))
        n = tf.size(tokens)
        nats = -tf.reduce_sum(tf.gather(logp[:n], tokens, batch_dims=1))
        if self.pair and not self.sparse:
            nats += tf.cond(tf.size(leftover) > 0,
                            lambda: open_pair_nats(logp[n], leftover[0], self.vocab_size),
                            lambda: tf.constant(0.0, tf.float64))
        characters = tf.size(tf.strings.unicode_decode(text, "UTF-8")) if self.bytes else tf.size(ids)
        return nats / tf.cast(tf.maximum(characters, 1), tf.float64)


def until_stop(codes, start, stop):
    """``codes`` (code points) cut after the first occurrence of ``stop`` that ends past ``start``
    (in the generated text; it may begin in the prime), as charlm.use.sampling cuts a sample."""
    stop = tf.strings.unicode_decode(stop, "UTF-8")
    size = tf.size(stop)
    # every window of the stop's length, the text padded so that there is at least one
    frames = tf.signal.frame(tf.concat([codes, tf.fill([tf.maximum(size, 1)], -1)], 0),
                             tf.maximum(size, 1), 1)
    found = tf.reduce_all(tf.equal(frames, stop[None, :]), axis=1) & (tf.range(tf.shape(frames)[0]) + size > start)
    end = tf.cond(tf.reduce_any(found) & (size > 0),
                  lambda: tf.cast(tf.argmax(tf.cast(found, tf.int32)), tf.int32) + size, lambda: tf.size(codes))
    return codes[:end]


FORMATS = ("savedmodel", "web", "tflite")


def export(checkpoint, output, format: str = "savedmodel", weights: str = "float32",
           tfjs_url: str | None = None, best: bool = False) -> Path:
    """Write the run in ``checkpoint`` (``best``: its ``best/`` checkpoint) to ``output`` (which
    must not exist) as ``format``:

    * ``savedmodel``: a SavedModel folder with ``generate`` and ``score`` (above);
    * ``web``: a folder with a page that generates in the browser (:mod:`charlm.use.web`;
      ``weights`` float32 or float16, ``tfjs_url`` a local copy of TensorFlow.js);
    * ``tflite``: a LiteRT file with a ``step`` signature and its vocabulary beside it
      (:mod:`charlm.use.tflite`).

    Nothing is written unless the whole export succeeds.
    """
    from charlm.run.checkpoint import load_model

    if format not in FORMATS:
        raise CharlmError(f"unknown --format {format!r}; choose from {', '.join(FORMATS)}")
    if format != "web" and (tfjs_url is not None or weights != "float32"):
        raise CharlmError("--tfjs-url and --weights apply to --format web only")
    from charlm.use.web import WEIGHT_DTYPES

    if weights not in WEIGHT_DTYPES:
        raise CharlmError(f"unknown --weights {weights!r}; choose from {', '.join(WEIGHT_DTYPES)}")
    output = Path(output)
    taken = [output]
    if format == "tflite":
        from charlm.use.tflite import vocab_path, write_tflite

        taken.append(vocab_path(output))
    for path in taken:
        if path.exists() or path.is_symlink():
            raise CharlmError(f"{path} already exists; choose a new output (nothing was overwritten)")
    model, tokenizer, _ = load_model(checkpoint, best=best)
    if format != "savedmodel" and tokenizer.vocab.bytes:
        raise CharlmError(f"--format {format} does not take a model with byte tokens (byte fallback); "
                          f"export it as a savedmodel, or train with --byte-fallback off")
    if format != "savedmodel" and model.softmax.kind != "full":
        raise CharlmError(f"--format {format} exports a full softmax; this run's is {model.softmax.kind} "
                          f"(export it as --format savedmodel)")
    name = Path(checkpoint).resolve().name
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial")
    if format == "tflite":
        write_tflite(model, tokenizer, output, name)
        return output
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    try:
        if format == "web":
            from charlm.use.web import write_web

            tmp.mkdir()
            write_web(model, tokenizer, tmp, name, weights, tfjs_url)
        else:
            module = ExportedModel(model, tokenizer)
            tf.saved_model.save(module, str(tmp), signatures={"generate": module.generate, "score": module.score})
        tmp.rename(output)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
    return output
