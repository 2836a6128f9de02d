"""Numerics of the LSTM against independent references (tests/reference.py)."""
import numpy as np
import pytest
import tensorflow as tf

from charlm.fast import kernels
from charlm.config import ModelConfig, build_configs
from charlm.use.scoring import Scorer
from charlm.nn.model import CharLM
from charlm.use.sampling import Sampler
from charlm.data.vocab import Tokenizer, Vocabulary
from reference import four_matmul_cell, log_softmax, numpy_forward, split_gates, weights_of


def make_model(kind="char", embedding=0, layers=1, hidden=8, tokens=7, dropout=0.0, dtype=tf.float64,
               init="uniform", seed=3):
    cfg = ModelConfig(kind=kind, hidden=hidden, layers=layers, embedding_size=embedding,
                      dropout=dropout, init=init)
    model = CharLM(cfg, tokens, seed=seed, dtype=dtype)
    # non-zero biases so the bias paths are checked too
    rng = np.random.default_rng(seed + 1)
    for cell in model.cells:
        cell.bias.assign(rng.normal(0, 0.3, cell.bias.shape))
    model.out_b.assign(rng.normal(0, 0.3, model.out_b.shape))
    return model


def test_ud730_parameter_count():
    model = CharLM(ModelConfig(), 27)
    assert model.num_parameters() == 25307


def test_notebook_init_is_truncated_normal_around_minus_0_1():
    w = CharLM(ModelConfig(hidden=64, init="notebook"), 27).cells[0].kernel.numpy()
    assert w.min() >= -0.3 - 1e-6 and w.max() <= 0.1 + 1e-6
    assert abs(w.mean() + 0.1) < 0.01 and 0.07 < w.std() < 0.1


def test_orthogonal_init_has_orthonormal_recurrent_rows_and_glorot_limits():
    """The ud730 preset's start: recurrent rows [H, 4H] with orthonormal rows, Glorot-uniform
    input rows (limit sqrt(6 / (fan_in + 4H))) and output weights, for one-hot and embedding input."""
    for embedding, layers in ((0, 1), (16, 2)):
        cfg = ModelConfig(hidden=32, layers=layers, embedding_size=embedding, init="orthogonal")
        model = CharLM(cfg, 27)
        for cell in model.cells:
            r = cell.recurrent_kernel.numpy().astype(np.float64)
            assert r.shape == (32, 128)
            np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-5)
            x = cell.input_kernel.numpy()
            limit = np.sqrt(6.0 / (cell.input_size + 128))
            assert np.abs(x).max() <= limit and np.abs(x).max() > 0.9 * limit
            assert abs(x.mean()) < 0.1 * limit
        out = model.out_w.numpy()
        assert np.abs(out).max() <= np.sqrt(6.0 / (32 + 27))
    assert build_configs("ud730")[0].init == "orthogonal"
    assert build_configs("ud730-bigram")[0].init == "orthogonal"
    assert build_configs("ud730", optimizer="adam")[0].init == "orthogonal"
    # --init still picks the notebook's own draw
    assert build_configs("ud730", init="notebook")[0].init == "notebook"


def test_single_matmul_step_equals_four_matmul_cell():
    model = make_model(hidden=6, tokens=5)
    cell = model.cells[0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5))
    h = rng.normal(size=(4, 6))
    c = rng.normal(size=(4, 6))
    got_h, (_, got_c) = cell(tf.constant(x), (tf.constant(h), tf.constant(c)))
    want_h, want_c = four_matmul_cell(x, h, c, *split_gates(cell.kernel.numpy(), cell.bias.numpy(), 5))
    np.testing.assert_allclose(got_h.numpy(), want_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_c.numpy(), want_c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("embedding,layers", [(0, 1), (0, 2), (5, 1), (5, 3)])
# Python-unrolled, plain while-loop, and (None with the unroll limit below the length) hand-BPTT loops
@pytest.mark.parametrize("loop", ["unrolled", "inference", "auto"])
def test_unroll_matches_numpy_forward(embedding, layers, loop, monkeypatch):
    monkeypatch.setattr("charlm.fast.bptt.STATIC_UNROLL_LIMIT", 4)
    steps = 9
    model = make_model(embedding=embedding, layers=layers)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 7, size=(steps, 3))
    start = [(rng.normal(size=(3, 8)), rng.normal(size=(3, 8))) for _ in range(layers)]
    fn = tf.function(lambda t, s: model.unroll(t, s, loop=loop))
    logits, state = fn(tf.constant(tokens), [tuple(map(tf.constant, s)) for s in start])
    want, want_state = numpy_forward(weights_of(model), tokens, 7, embedding=bool(embedding), state=start)
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-10, atol=1e-10)
    for (h, c), (wh, wc) in zip(state, want_state):
        np.testing.assert_allclose(h.numpy(), wh, atol=1e-10)
        np.testing.assert_allclose(c.numpy(), wc, atol=1e-10)


@pytest.mark.parametrize("embedding,layers", [(0, 1), (4, 2)])
def test_step_matches_unroll(embedding, layers):
    """The sampling path (step_weights + one step at a time) equals the unroll path."""
    model = make_model(embedding=embedding, layers=layers)
    tokens = np.random.default_rng(2).integers(0, 7, size=(5, 2))
    want, _ = numpy_forward(weights_of(model), tokens, 7, embedding=bool(embedding))
    weights = model.step_weights()
    state = model.zero_state(2)
    for t in range(5):
        logits, state = model.step(weights, tf.constant(tokens[t]), state)
        np.testing.assert_allclose(logits.numpy(), want[t], atol=1e-10)


def _loss_and_grads(model, tokens, seed=None):
    def loss_fn():
        logits, _ = model.unroll(tokens[:-1], model.zero_state(tokens.shape[1]), seed)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens[1:], logits=logits))

    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, model.trainable_variables)
    return loss_fn, [tf.convert_to_tensor(g).numpy() for g in grads]


def _check_finite_differences(model, tokens, seed=None):
    loss_fn, grads = _loss_and_grads(model, tokens, seed)
    rng = np.random.default_rng(5)
    eps = 1e-6
    checked = 0
    for var, grad in zip(model.trainable_variables, grads):
        flat = var.numpy().ravel()
        for idx in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            orig = flat[idx]
            values = []
            for delta in (eps, -eps):
                flat[idx] = orig + delta
                var.assign(flat.reshape(var.shape))
                values.append(float(loss_fn()))
            flat[idx] = orig
            var.assign(flat.reshape(var.shape))
            numeric = (values[0] - values[1]) / (2 * eps)
            assert grad.ravel()[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (var.name, idx)
            checked += 1
    assert checked >= 6 * 3


@pytest.mark.parametrize("embedding,layers,dropout", [(0, 1, 0.0), (4, 2, 0.0), (4, 2, 0.3), (0, 1, 0.3)])
@pytest.mark.parametrize("limit", [20, 2])      # the Python-unrolled window, and the hand-BPTT loops
def test_gradients_match_finite_differences(embedding, layers, dropout, limit, monkeypatch):
    monkeypatch.setattr("charlm.fast.bptt.STATIC_UNROLL_LIMIT", limit)
    model = make_model(embedding=embedding, layers=layers, hidden=5, tokens=6, dropout=dropout)
    tokens = tf.constant(np.random.default_rng(4).integers(0, 6, size=(5, 2)))
    _check_finite_differences(model, tokens, tf.constant([7, 11], tf.int64) if dropout else None)


@pytest.mark.parametrize("embedding", [0, 4])
def test_gather_gradient_of_large_tables_matches_finite_differences(embedding, monkeypatch):
    """Tables above ONE_HOT_GRAD_ROWS take tf.gather's own (scatter-add) gradient."""
    monkeypatch.setattr("charlm.fast.lookup.ONE_HOT_GRAD_ROWS", 0)
    model = make_model(embedding=embedding, hidden=5, tokens=6)
    _check_finite_differences(model, tf.constant(np.random.default_rng(4).integers(0, 6, size=(5, 2))))


@pytest.mark.parametrize("embedding,layers", [(0, 1), (4, 2)])
def test_fused_float32_backward_matches_float64(embedding, layers, monkeypatch):
    """In float32 the hand-BPTT loops take charlm's step kernels (or, without them, TensorFlow's
    fused LSTMBlockCellGrad op); float64 takes the plain formulas checked above.  Same gradients."""
    monkeypatch.setattr("charlm.fast.bptt.STATIC_UNROLL_LIMIT", 2)
    tokens = tf.constant(np.random.default_rng(8).integers(0, 6, size=(9, 3)))
    m64 = make_model(embedding=embedding, layers=layers, hidden=6, tokens=6)
    m32 = make_model(embedding=embedding, layers=layers, hidden=6, tokens=6, dtype=tf.float32)
    for v32, v64 in zip(m32.trainable_variables, m64.trainable_variables):
        v32.assign(tf.cast(v64, tf.float32))
    _, g64 = _loss_and_grads(m64, tokens)
    _, g32 = _loss_and_grads(m32, tokens)
    for a, b in zip(g32, g64):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    ops = set()

    @tf.function(autograph=False)
    def grads32():
        with tf.GradientTape() as tape:
            logits, _ = m32.unroll(tokens[:-1], m32.zero_state(3))
            loss = tf.reduce_sum(logits)
        return tape.gradient(loss, m32.trainable_variables)

    def collect(graph_def):
        for node in graph_def.node:
            ops.add(node.op)
        for fn in graph_def.library.function:
            ops.update(node.op for node in fn.node_def)

    collect(grads32.get_concrete_function().graph.as_graph_def())
    assert ("CharlmLstmBackward" if kernels.lstm_steps() is not None else "LSTMBlockCellGrad") in ops


def test_dropout_only_in_training_and_seeded():
    model = make_model(embedding=4, layers=2, dropout=0.5)
    tokens = tf.constant(np.random.default_rng(6).integers(0, 7, size=(6, 3)))
    infer, _ = model.unroll(tokens, model.zero_state(3))
    want, _ = numpy_forward(weights_of(model), tokens.numpy(), 7, embedding=True)
    np.testing.assert_allclose(infer.numpy(), want, atol=1e-10)      # off without a seed
    a, _ = model.unroll(tokens, model.zero_state(3), tf.constant([1, 2], tf.int64))
    b, _ = model.unroll(tokens, model.zero_state(3), tf.constant([1, 2], tf.int64))
    c, _ = model.unroll(tokens, model.zero_state(3), tf.constant([1, 3], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-3
    assert np.abs(a.numpy() - infer.numpy()).max() > 1e-3


def test_dropout_leaves_the_recurrent_path_alone():
    """With every non-recurrent input dropped... the LSTM still runs on h -> h alone, undropped.

    Drop rate near 1 zeroes layer 0's input almost always; the recurrence from a non-zero start
    state must then match the reference with zero input (no mask was applied to h)."""
    model = make_model(embedding=4, layers=1, dropout=0.999999)
    start = [(np.full((2, 8), 0.5), np.full((2, 8), 0.7))]
    tokens = tf.constant(np.zeros((3, 2), dtype=np.int64))
    weights = weights_of(model)
    weights["embedding"] = np.zeros_like(weights["embedding"])
    _, state = model.unroll(tokens, [tuple(map(tf.constant, s)) for s in start], tf.constant([3, 4], tf.int64))
    _, want_state = numpy_forward(weights, tokens.numpy(), 7, embedding=True, state=start)
    np.testing.assert_allclose(state[0][0].numpy(), want_state[0][0], atol=1e-10)


@pytest.mark.parametrize("kind", ["char", "bigram"])
@pytest.mark.parametrize("length", [300, 301])
def test_scorer_matches_numpy(kind, length):
    vocab = Vocabulary("abcd ")
    tok = Tokenizer(kind, vocab)
    model = make_model(kind=kind, embedding=4 if kind == "bigram" else 0, layers=2, tokens=tok.num_tokens,
                       dtype=tf.float32)
    ids = np.random.default_rng(7).integers(0, 5, size=length)
    score = Scorer(model, tok, chunk_tokens=64).score_ids(ids)    # several chunks, last one padded
    tokens = tok.tokens(ids)
    logits, _ = numpy_forward({k: (v if k != "cells" else [(a.astype(float), b.astype(float)) for a, b in v])
                               for k, v in weights_of(model).items()}, tokens[:, None], tok.num_tokens,
                              embedding=kind == "bigram")
    lp = log_softmax(np.concatenate([model.out_b.numpy()[None].astype(float), logits[:-1, 0]]))
    want = -lp[np.arange(tokens.size), tokens].sum()
    if length % 2 and kind == "bigram":
        last = log_softmax(logits[-1, 0])
        c = ids[-1]
        want += -np.logaddexp.reduce(last[c * 5:(c + 1) * 5])
    assert score.characters == length
    assert score.nats == pytest.approx(want, rel=1e-5)


def test_greedy_sampling_matches_numpy():
    vocab = Vocabulary("abcd ")
    tok = Tokenizer("char", vocab)
    model = make_model(tokens=5, layers=2, dtype=tf.float32)
    text = Sampler(model, tok).generate(prime="ab", length=12, temperature=0)[0]
    ids = list(vocab.encode("ab"))
    weights = weights_of(model)
    for _ in range(12):
        logits, _ = numpy_forward(weights, np.array(ids)[:, None], 5)
        ids.append(int(np.argmax(logits[-1, 0])))
    assert text == vocab.decode(ids)


def test_pick_draws_from_the_softmax():
    from charlm.use.sampling import pick

    logits = tf.constant([[2.0, 1.0, 0.0, -np.inf, 0.5]] * 4000, tf.float32)
    draws = pick(logits, tf.constant(1.0), tf.constant(0), tf.constant([5, 6], tf.int64)).numpy()
    want = np.exp([2.0, 1.0, 0.0, 0.0, 0.5]) * [1, 1, 1, 0, 1]
    want /= want.sum()
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, want, atol=0.03)
    assert freq[3] == 0
    top2 = pick(logits, tf.constant(1.0), tf.constant(2), tf.constant([5, 7], tf.int64)).numpy()
    assert set(top2.tolist()) == {0, 1}
    hot = pick(logits, tf.constant(0.0), tf.constant(0), tf.constant([5, 8], tf.int64)).numpy()
    assert (hot == 0).all()


def _numpy_streams(model, tok, ids, streams, warmup):
    """The streamed figure computed by hand: each piece from the zero state after reading up to
    ``warmup`` tokens before it, scored with numpy_forward."""
    weights = {k: (v if k != "cells" else [(a.astype(float), b.astype(float)) for a, b in v])
               for k, v in weights_of(model).items()}
    tokens = tok.tokens(ids)
    length = -(-tokens.size // streams)
    total = 0.0
    for s in range(streams):
        begin = s * length
        window = tokens[max(0, begin - warmup):begin + length]
        logits, _ = numpy_forward(weights, window[:, None], tok.num_tokens, embedding=model.embedding is not None)
        lp = log_softmax(np.concatenate([weights["out_b"][None], logits[:-1, 0]]))
        nats = -lp[np.arange(window.size), window]
        total += nats[begin - max(0, begin - warmup):].sum()
    return total


@pytest.mark.parametrize("kernels_on", [True, False])
@pytest.mark.parametrize("streams,layers,embedding", [(3, 1, 0), (5, 2, 4)])
def test_streamed_scoring_matches_numpy(streams, layers, embedding, kernels_on, monkeypatch):
    """Pieces side by side, each after a warm-up, with padding at both ends and several calls."""
    monkeypatch.setattr("charlm.fast.streams.WARMUP", 7)
    monkeypatch.setattr("charlm.fast.streams.STREAM_STEPS", 16)
    if not kernels_on:
        monkeypatch.setenv("CHARLM_CUSTOM_OPS", "off")
    vocab = Vocabulary("abcd ")
    tok = Tokenizer("char", vocab)
    model = make_model(embedding=embedding, layers=layers, tokens=tok.num_tokens, dtype=tf.float32)
    ids = np.random.default_rng(9).integers(0, 5, size=203)
    score = Scorer(model, tok, streams=streams).score_ids(ids)
    assert score.nats == pytest.approx(_numpy_streams(model, tok, ids, streams, 7), rel=1e-5)


def test_streamed_scoring_gathers_the_rows_of_a_large_table(monkeypatch):
    """Above COLUMN_TOKENS the layer-0 columns are the table's rows, gathered and transposed."""
    monkeypatch.setattr("charlm.fast.streams.WARMUP", 7)
    monkeypatch.setattr("charlm.fast.streams.STREAM_STEPS", 16)
    monkeypatch.setattr("charlm.fast.streams.COLUMN_TOKENS", 2)
    vocab = Vocabulary("abcd ")
    tok = Tokenizer("char", vocab)
    model = make_model(tokens=tok.num_tokens, dtype=tf.float32)
    ids = np.random.default_rng(9).integers(0, 5, size=203)
    score = Scorer(model, tok, streams=3).score_ids(ids)
    assert score.nats == pytest.approx(_numpy_streams(model, tok, ids, 3, 7), rel=1e-5)


def test_streams_stay_close_to_one_state_with_bfloat16_matmuls():
    """The default for long texts (streams, bfloat16 matmuls) against one float32 state."""
    vocab = Vocabulary("abcd ")
    tok = Tokenizer("char", vocab)
    model = make_model(layers=2, hidden=16, tokens=tok.num_tokens, dtype=tf.float32)
    ids = np.random.default_rng(10).integers(0, 5, size=3000)
    one = Scorer(model, tok, streams=1).score_ids(ids).nats_per_char
    many = Scorer(model, tok, streams=4, compute=tf.bfloat16).score_ids(ids).nats_per_char
    assert abs(many - one) < 0.01


def test_one_state_chunks_shrink_to_the_logits_budget(monkeypatch):
    """A vocabulary too large for a chunk's logits gets shorter chunks, and the same figure."""
    vocab = Vocabulary("abcd ")
    tok = Tokenizer("char", vocab)
    model = make_model(tokens=tok.num_tokens, dtype=tf.float32)
    ids = np.random.default_rng(11).integers(0, 5, size=500)
    want = Scorer(model, tok, streams=1).score_ids(ids).nats
    monkeypatch.setattr("charlm.use.scoring.LOGITS_BUDGET", 5 * 8 + 3)      # room for 8 positions
    scorer = Scorer(model, tok, streams=1)
    calls = []
    original = scorer._chunk_fn
    monkeypatch.setattr(scorer, "_chunk_fn", lambda piece, *a: calls.append(int(piece.shape[0])) or original(piece, *a))
    assert scorer.score_ids(ids).nats == pytest.approx(want, rel=1e-6)
    assert set(calls) == {8}
