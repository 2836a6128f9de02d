"""charlm's fused LSTM cell kernel (charlm/kernels): built from source, checked against plain ops."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from charlm import kernels
from charlm.model import _cell_forward, _recur_loop

ROOT = Path(__file__).resolve().parent.parent
needs_compiler = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                    reason="no C++ compiler to build the kernel")


@needs_compiler
@pytest.mark.parametrize("batch,hidden", [(1, 1), (3, 5), (64, 512), (7, 33)])
def test_fused_cell_forward_matches_plain_ops(batch, hidden):
    fused = kernels.cell_forward()
    assert fused is not None
    rng = np.random.default_rng(batch * 100 + hidden)
    z = tf.constant(rng.normal(0, 3, (batch, 4 * hidden)), tf.float32)
    c = tf.constant(rng.normal(0, 2, (batch, hidden)), tf.float32)
    got_h, got_c, got_acts = fused(z, c)
    want_h, want_c, want_acts = _cell_forward(z, c)
    for got, want in zip((got_h, got_c, *got_acts), (want_h, want_c, *want_acts)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@needs_compiler
def test_fused_cell_forward_rejects_mismatched_shapes():
    fused = kernels.cell_forward()
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 \\* hidden"):
        fused(tf.zeros([2, 12]), tf.zeros([2, 4]))


def _loop_graph_ops():
    xw = tf.zeros([6, 2, 12])
    h = tf.zeros([2, 3])
    w = tf.zeros([3, 12])

    @tf.function(autograph=False)
    def fn():
        return _recur_loop(xw, h, h, w)[0]

    ops = set()
    graph_def = fn.get_concrete_function().graph.as_graph_def()
    ops.update(node.op for node in graph_def.node)
    for f in graph_def.library.function:
        ops.update(node.op for node in f.node_def)
    return ops


@needs_compiler
def test_long_window_loop_uses_the_kernel_unless_turned_off(monkeypatch):
    assert "CharlmCellForward" in _loop_graph_ops()
    monkeypatch.setenv("CHARLM_CUSTOM_OPS", "off")
    assert "CharlmCellForward" not in _loop_graph_ops()


def test_without_a_compiler_training_falls_back_to_plain_ops(tmp_path):
    """A failed build costs one stderr line and nothing else: the model still computes."""
    code = ("import numpy as np, tensorflow as tf\n"
            "from charlm.model import _recur_loop\n"
            "x = tf.constant(np.linspace(-1, 1, 6 * 2 * 12).reshape(6, 2, 12), tf.float32)\n"
            "h = tf.zeros([2, 3])\n"
            "print(float(tf.reduce_sum(_recur_loop(x, h, h, tf.zeros([3, 12]))[0])))\n")
    env = {**os.environ, "CXX": "/bin/false", "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fused LSTM cell kernel unavailable" in proc.stderr and "/bin/false failed" in proc.stderr
    x = tf.constant(np.linspace(-1, 1, 6 * 2 * 12).reshape(6, 2, 12), tf.float32)
    h = tf.zeros([2, 3])
    want = float(tf.reduce_sum(_recur_loop(x, h, h, tf.zeros([3, 12]))[0]))
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(want, rel=1e-5)
    assert not list((tmp_path / "charlm" / "ops").glob("*.so"))      # no half-written library left
