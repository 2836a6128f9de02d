"""charlm's LSTM step kernels (charlm/fast/kernels): built from source, checked against plain ops."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from charlm.fast import kernels
from charlm.fast import lstm_loops
from charlm.nn.cells import LSTMCell

ROOT = Path(__file__).resolve().parent.parent
needs_compiler = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                    reason="no C++ compiler to build the kernels")
LONG = 25        # a window above STATIC_UNROLL_LIMIT: the loop path


def _plain_step(z_t, c_t, d_out_t, d_c_t):
    """The row-major plain-op formulas, applied to feature-major ``[4H, B]`` / ``[H, B]`` tensors."""
    h, c_new, acts = LSTMCell.forward(tf.transpose(z_t), tf.transpose(c_t))
    dz, d_c_prev = LSTMCell.backward(tf.transpose(d_out_t), tf.transpose(d_c_t), tf.transpose(c_t), acts)
    back = lambda x: tf.transpose(x).numpy()  # noqa: E731
    return back(h), back(c_new), [back(a) for a in acts], back(dz), back(d_c_prev)


@needs_compiler
@pytest.mark.parametrize("hidden,batch", [(1, 1), (5, 3), (512, 64), (33, 7)])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_step_kernels_match_plain_ops(hidden, batch, dtype):
    """Forward and backward ops against the plain formulas; the recurrent halves arrive in ``dtype``."""
    library = kernels.lstm_steps()
    assert library is not None
    rng = np.random.default_rng(hidden * 100 + batch)
    gates = lambda rows, sd: tf.constant(rng.normal(0, sd, (rows, batch)), tf.float32)  # noqa: E731
    xw, zr, c = gates(4 * hidden, 2), tf.cast(gates(4 * hidden, 2), dtype), gates(hidden, 2)
    d_out, d_hr, d_c = gates(hidden, 1), tf.cast(gates(hidden, 1), dtype), gates(hidden, 1)
    h, h_low, c_new, saved = library.charlm_lstm_forward(xw, zr, c)
    dz, dz_low, d_c_prev = library.charlm_lstm_backward(d_out, d_hr, d_c, saved)
    want_h, want_c, want_acts, want_dz, want_dc = _plain_step(
        xw + tf.cast(zr, tf.float32), c, d_out + tf.cast(d_hr, tf.float32), d_c)
    close = lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # noqa: E731
    close(h.numpy(), want_h)
    close(c_new.numpy(), want_c)
    close(saved.numpy(), np.stack([c.numpy(), *want_acts]))
    close(dz.numpy(), want_dz)
    close(d_c_prev.numpy(), want_dc)
    assert h_low.dtype == dtype and dz_low.dtype == dtype
    np.testing.assert_array_equal(h_low.numpy(), tf.cast(h, dtype).numpy())       # rounded once
    np.testing.assert_array_equal(dz_low.numpy(), tf.cast(dz, dtype).numpy())


@needs_compiler
def test_step_kernels_reject_mismatched_shapes():
    library = kernels.lstm_steps()
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 \\* hidden"):
        library.charlm_lstm_forward(tf.zeros([12, 2]), tf.zeros([12, 2]), tf.zeros([4, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="saved"):
        library.charlm_lstm_backward(tf.zeros([3, 2]), tf.zeros([3, 2]), tf.zeros([3, 2]), tf.zeros([5, 3, 2]))


def _loss_and_grads(recur, xw, h, c, w):
    with tf.GradientTape() as tape:
        tape.watch([xw, h, c, w])
        out, h_last, c_last = recur(xw, h, c, w)
        loss = tf.reduce_sum(out * out) + tf.reduce_sum(h_last * c_last) + tf.reduce_sum(c_last)
    return [out, h_last, c_last] + tape.gradient(loss, [xw, h, c, w])


@needs_compiler
@pytest.mark.parametrize("compute,rtol", [(tf.float32, 2e-4), (tf.bfloat16, 3e-2)])
def test_kernel_loop_matches_plain_loop(compute, rtol):
    """The feature-major kernel loop against the row-major plain-op loop (float64 formulas):
    outputs, final state and all four gradients, in float32 and with bfloat16 matmuls."""
    rng = np.random.default_rng(3)
    t, b, hidden = 12, 5, 16
    args64 = [tf.constant(rng.normal(0, s, shape)) for s, shape in
              ((1.0, (t, b, 4 * hidden)), (0.5, (b, hidden)), (0.5, (b, hidden)), (0.3, (hidden, 4 * hidden)))]
    want = _loss_and_grads(lstm_loops._loop(LSTMCell, tf.float64), *args64)
    got = _loss_and_grads(lstm_loops._kernel_loop(compute), *[tf.cast(a, tf.float32) for a in args64])
    for g, w in zip(got, want):
        w = w.numpy()
        assert np.linalg.norm(g.numpy() - w) <= rtol * np.linalg.norm(w)


def _loop_graph_ops():
    xw = tf.zeros([LONG, 2, 12])
    h = tf.zeros([2, 3])
    w = tf.zeros([3, 12])

    @tf.function(autograph=False)
    def fn():
        with tf.GradientTape() as tape:
            tape.watch(xw)
            out = lstm_loops.recur(LSTMCell, xw, h, h, w)[0]
        return tape.gradient(out, xw)

    ops = set()
    graph_def = fn.get_concrete_function().graph.as_graph_def()
    ops.update(node.op for node in graph_def.node)
    for f in graph_def.library.function:
        ops.update(node.op for node in f.node_def)
    return ops


@needs_compiler
def test_long_window_loop_uses_the_kernels_unless_turned_off(monkeypatch):
    ops = _loop_graph_ops()
    assert {"CharlmLstmForward", "CharlmLstmBackward"} <= ops
    monkeypatch.setenv("CHARLM_CUSTOM_OPS", "off")
    ops = _loop_graph_ops()
    assert "CharlmLstmForward" not in ops and "LSTMBlockCellGrad" in ops


def test_without_a_compiler_training_falls_back_to_plain_ops(tmp_path):
    """A failed build costs one stderr line and nothing else: the model still computes."""
    code = ("import numpy as np, tensorflow as tf\n"
            "from charlm.fast import lstm_loops\n"
            "from charlm.nn.cells import LSTMCell\n"
            f"x = tf.constant(np.linspace(-1, 1, {LONG} * 2 * 12).reshape({LONG}, 2, 12), tf.float32)\n"
            "h = tf.zeros([2, 3])\n"
            "print(float(tf.reduce_sum(lstm_loops.recur(LSTMCell, x, h, h, tf.fill([3, 12], 0.1))[0])))\n")
    env = {**os.environ, "CXX": "/bin/false", "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LSTM step kernels unavailable" in proc.stderr and "/bin/false failed" in proc.stderr
    x = tf.constant(np.linspace(-1, 1, LONG * 2 * 12).reshape(LONG, 2, 12), tf.float32)
    h = tf.zeros([2, 3])
    want = float(tf.reduce_sum(lstm_loops._loop(LSTMCell, tf.float32)(x, h, h, tf.fill([3, 12], 0.1))[0]))
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(want, rel=1e-5)
    assert not list((tmp_path / "charlm" / "ops").glob("*.so"))      # no half-written library left


@needs_compiler
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_evaluation_kernels_match_plain_ops(dtype):
    """The column lookup against tf.gather, and the masked step against the formulas: masked
    columns keep their state."""
    library = kernels.lstm_steps()
    rng = np.random.default_rng(5)
    hidden, batch, vocab = 6, 5, 9
    table = tf.constant(rng.normal(0, 1, (4 * hidden, vocab)), tf.float32)
    ids = tf.constant([3, 0, 8, 3, 1], tf.int32)
    xw = library.charlm_columns(table, ids)
    np.testing.assert_array_equal(xw.numpy(), tf.gather(table, ids, axis=1).numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        library.charlm_columns(table, tf.constant([9], tf.int32))
    zr = tf.cast(tf.constant(rng.normal(0, 1, (4 * hidden, batch)), tf.float32), dtype)
    h, c = (tf.constant(rng.normal(0, 1, (hidden, batch)), tf.float32) for _ in range(2))
    keep = tf.constant([True, False, True, True, False])
    h_new, h_low, c_new = library.charlm_lstm_step(xw, zr, h, c, keep)
    want_h, want_c, _, _, _ = _plain_step(xw + tf.cast(zr, tf.float32), c, h, c)
    mask = keep.numpy()[None, :]
    np.testing.assert_allclose(h_new.numpy(), np.where(mask, want_h, h.numpy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_new.numpy(), np.where(mask, want_c, c.numpy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(h_low.numpy(), tf.cast(h_new, dtype).numpy())
