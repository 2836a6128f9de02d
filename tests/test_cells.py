"""The GRU and Elman RNN (charlm.nn.cells) against independent references: per-gate numpy cells and
forward passes (tests/reference.py), finite-difference gradients, and Keras' own GRU layer."""
import numpy as np
import pytest
import tensorflow as tf

from charlm.nn import cells
from charlm.config import ModelConfig
from charlm.nn.model import CharLM
from charlm.use.sampling import Sampler
from charlm.use.scoring import Scorer
from charlm.data.vocab import Tokenizer, Vocabulary
from reference import cell_weights_of, gru_cell, log_softmax, numpy_forward_cells, split_columns, tanh_cell
from test_model import _check_finite_differences

CELLS = ["gru", "rnn"]


def make_model(cell, kind="char", embedding=0, layers=1, hidden=8, tokens=7, dropout=0.0, dtype=tf.float64,
               init="uniform", seed=3):
    cfg = ModelConfig(kind=kind, hidden=hidden, layers=layers, embedding_size=embedding, dropout=dropout,
                      init=init, cell=cell)
    model = CharLM(cfg, tokens, seed=seed, dtype=dtype)
    # non-zero biases so the bias paths are checked too
    rng = np.random.default_rng(seed + 1)
    for c in model.cells:
        c.bias.assign(rng.normal(0, 0.3, c.bias.shape))
        if cell == "gru":
            c.recurrent_bias.assign(rng.normal(0, 0.3, c.recurrent_bias.shape))
    model.out_b.assign(rng.normal(0, 0.3, model.out_b.shape))
    return model


@pytest.mark.parametrize("cell,gates,extra", [("gru", 3, 1), ("rnn", 1, 0)])
def test_shapes_and_parameter_counts(cell, gates, extra):
    model = CharLM(ModelConfig(hidden=64, cell=cell), 27)
    assert model.cells[0].kernel.shape == (27 + 64, gates * 64)
    assert model.num_parameters() == (27 + 64 + 1) * gates * 64 + extra * 64 + 64 * 27 + 27
    # the orthogonal start: orthonormal rows of the recurrent kernel [H, gates * H]
    r = CharLM(ModelConfig(hidden=16, cell=cell, init="orthogonal"), 27).cells[0].recurrent_kernel.numpy()
    np.testing.assert_allclose(r.astype(np.float64) @ r.T, np.eye(16), atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_single_matmul_step_equals_per_gate_cell(cell):
    model = make_model(cell, hidden=6, tokens=5)
    c = model.cells[0]
    rng = np.random.default_rng(0)
    x, h = rng.normal(size=(4, 5)), rng.normal(size=(4, 6))
    got = c(tf.constant(x), (tf.constant(h), tf.constant(h)))[0].numpy()
    parts = split_columns(c.kernel.numpy(), c.bias.numpy(), 5, c.gates)
    want = gru_cell(x, h, *parts, c.recurrent_bias.numpy()) if cell == "gru" else tanh_cell(x, h, *parts)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding,layers", [(0, 1), (0, 2), (5, 3)])
# Python-unrolled, plain while-loop, and (None with the unroll limit below the length) hand-BPTT loops
@pytest.mark.parametrize("loop", ["unrolled", "inference", "auto"])
def test_unroll_matches_numpy_forward(cell, embedding, layers, loop, monkeypatch):
    monkeypatch.setattr("charlm.fast.bptt.STATIC_UNROLL_LIMIT", 4)
    steps = 9
    model = make_model(cell, embedding=embedding, layers=layers)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 7, size=(steps, 3))
    start = [(rng.normal(size=(3, 8)), rng.normal(size=(3, 8))) for _ in range(layers)]
    fn = tf.function(lambda t, s: model.unroll(t, s, loop=loop))
    logits, state = fn(tf.constant(tokens), [tuple(map(tf.constant, s)) for s in start])
    want, want_h = numpy_forward_cells(cell_weights_of(model), tokens, 7, cell, embedding=bool(embedding),
                                       state=[h for h, _ in start])
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-10, atol=1e-10)
    for (h, c), wh, (_, c0) in zip(state, want_h, start):
        np.testing.assert_allclose(h.numpy(), wh, atol=1e-10)
        np.testing.assert_array_equal(c.numpy(), c0)        # the unused c passes through


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding,layers", [(0, 1), (4, 2)])
def test_step_matches_numpy(cell, embedding, layers):
    """The sampling path (input lookup table + one step at a time)."""
    model = make_model(cell, embedding=embedding, layers=layers)
    tokens = np.random.default_rng(2).integers(0, 7, size=(5, 2))
    want, _ = numpy_forward_cells(cell_weights_of(model), tokens, 7, cell, embedding=bool(embedding))
    weights = model.step_weights()
    state = model.zero_state(2)
    for t in range(5):
        logits, state = model.step(weights, tf.constant(tokens[t]), state)
        np.testing.assert_allclose(logits.numpy(), want[t], atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding,layers,dropout", [(0, 1, 0.0), (4, 2, 0.3)])
@pytest.mark.parametrize("limit", [20, 2])      # the Python-unrolled window, and the hand-BPTT loops
def test_gradients_match_finite_differences(cell, embedding, layers, dropout, limit, monkeypatch):
    monkeypatch.setattr("charlm.fast.bptt.STATIC_UNROLL_LIMIT", limit)
    model = make_model(cell, embedding=embedding, layers=layers, hidden=5, tokens=6, dropout=dropout)
    tokens = tf.constant(np.random.default_rng(4).integers(0, 6, size=(5, 2)))
    _check_finite_differences(model, tokens, tf.constant([7, 11], tf.int64) if dropout else None)


def _keras_gru(units, inputs, seed=0):
    import keras

    layer = keras.layers.GRU(units, reset_after=True, return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, None, inputs))
    rng = np.random.default_rng(seed)
    # every weight random, both bias rows too (Keras' columns are z, r, h as charlm's)
    layer.set_weights([rng.normal(0, 0.5, w.shape) for w in layer.get_weights()])
    return layer


@pytest.mark.parametrize("loop", ["unrolled", "auto"])
def test_gru_matches_keras_gru_with_reset_after(loop, monkeypatch):
    """Keras' GRU (reset_after=True) with random weights, moved into a charlm GRU layer: the same
    outputs, final state and gradients (charlm's hand backward against Keras' autodiff)."""
    monkeypatch.setattr("charlm.fast.bptt.STATIC_UNROLL_LIMIT", 3)
    steps, batch, inputs, units = 7, 3, 4, 5
    layer = _keras_gru(units, inputs)
    kernel, recurrent, bias = layer.get_weights()
    cell = cells.GRUCell(inputs, units, np.concatenate([kernel, recurrent]), dtype=tf.float64)
    # z and r see input bias + recurrent bias; the candidate keeps its recurrent bias inside the reset
    cell.bias.assign(bias[0] + np.concatenate([bias[1][:2 * units], np.zeros(units)]))
    cell.recurrent_bias.assign(bias[1][2 * units:])
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(batch, steps, inputs)))
    h0 = tf.constant(rng.normal(size=(batch, units)))
    probe = tf.constant(rng.normal(size=(batch, steps, units)))

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, h0])
        want_seq, want_h = layer(x, initial_state=[h0])
        want_loss = tf.reduce_sum(want_seq * probe) + tf.reduce_sum(want_h ** 2)
        xw = tf.einsum("bti,ig->tbg", x, cell.input_kernel) + cell.bias
        seq, (h, _) = cell.sequence(xw, cell.recurrent_kernel, (h0, h0), loop)
        seq = tf.transpose(seq, [1, 0, 2])
        loss = tf.reduce_sum(seq * probe) + tf.reduce_sum(h ** 2)
    np.testing.assert_allclose(seq.numpy(), want_seq.numpy(), atol=1e-12)
    np.testing.assert_allclose(h.numpy(), want_h.numpy(), atol=1e-12)
    got = tape.gradient(loss, [x, h0, cell.kernel, cell.bias, cell.recurrent_bias])
    want = tape.gradient(want_loss, [x, h0, *layer.trainable_weights])
    np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), atol=1e-10)
    np.testing.assert_allclose(got[1].numpy(), want[1].numpy(), atol=1e-10)
    d_kernel = np.concatenate([want[2].numpy(), want[3].numpy()])
    np.testing.assert_allclose(got[2].numpy(), d_kernel, atol=1e-10)
    d_bias = want[4].numpy()
    np.testing.assert_allclose(got[3].numpy(), d_bias[0], atol=1e-10)
    np.testing.assert_allclose(got[4].numpy(), d_bias[1][2 * units:], atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", ["char", "bigram"])
def test_scorer_matches_numpy(cell, kind):
    vocab = Vocabulary("abcd ")
    tok = Tokenizer(kind, vocab)
    model = make_model(cell, kind=kind, embedding=4 if kind == "bigram" else 0, layers=2, tokens=tok.num_tokens,
                       dtype=tf.float32)
    ids = np.random.default_rng(7).integers(0, 5, size=301)
    score = Scorer(model, tok, chunk_tokens=64).score_ids(ids)    # several chunks, last one padded
    tokens = tok.tokens(ids)
    weights = {k: (v if k != "cells" else [tuple(a.astype(float) for a in c) for c in v])
               for k, v in cell_weights_of(model).items()}
    logits, _ = numpy_forward_cells(weights, tokens[:, None], tok.num_tokens, cell, embedding=kind == "bigram")
    lp = log_softmax(np.concatenate([model.out_b.numpy()[None].astype(float), logits[:-1, 0]]))
    want = -lp[np.arange(tokens.size), tokens].sum()
    if kind == "bigram":
        c = ids[-1]
        want += -np.logaddexp.reduce(log_softmax(logits[-1, 0])[c * 5:(c + 1) * 5])
    assert score.nats == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_sampling_matches_numpy(cell):
    vocab = Vocabulary("abcd ")
    model = make_model(cell, tokens=5, layers=2, dtype=tf.float32)
    text = Sampler(model, Tokenizer("char", vocab)).generate(prime="ab", length=12, temperature=0)[0]
    ids = list(vocab.encode("ab"))
    weights = cell_weights_of(model)
    for _ in range(12):
        logits, _ = numpy_forward_cells(weights, np.array(ids)[:, None], 5, cell)
        ids.append(int(np.argmax(logits[-1, 0])))
    assert text == vocab.decode(ids)
