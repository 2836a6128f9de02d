"""Everything that exists for speed, beside the model it speeds up (:mod:`charlm.nn`).

Each piece computes exactly what the plain model would (the tests check every one against a
plain-numpy reference or the plain path); what it gains, and when it is used:

* ``lookup`` — layer 0's input half as a row lookup instead of a matmul of one-hot rows, with a
  one-hot-matmul gradient for small tables (~5x cheaper than a scatter-add here).  Every window.
* ``bptt`` — a window of a GRU or RNN layer with a hand-derived backward pass: only the ``dh``
  chain in the loop, the recurrent weight gradient as one matmul after it.  Python-unrolled for
  short windows (what XLA compiles best), symbolic loops traced once for long ones.  Training.
* ``lstm_loops`` — the same for the LSTM, plus: charlm's C++ step kernels on a CPU in float32
  (feature-major, ~1.6x the recurrent matmul's speed, ~4x with bfloat16 on AMX) and TensorFlow's
  fused ``LSTMBlockCellGrad`` elsewhere.  Training, reading a prime.
* ``matmul`` and ``precision`` — bfloat16 matmul inputs (weights and state stay float32) where the
  hardware multiplies them fast: LSTMs of 256 units or more outside XLA.  ``--precision``.
* ``streams`` — a long text scored as side-by-side streams, so the matmuls see a batch instead of
  one row.  ``eval`` and validation, texts of more than 4,096 tokens.
* ``kernels`` — the C++ ops behind ``lstm_loops`` and ``streams``, compiled on first use
  (``CHARLM_CUSTOM_OPS=off`` turns them off; without a compiler the plain ops run).

The compiled sampling loop (``charlm.use.sampling``) and the XLA-compiled training block
(``charlm.training.trainer``) live with the code they compile.
"""
