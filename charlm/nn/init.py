"""The starting weights: the same numbers for the same seed, whatever the cell or the path run."""
from __future__ import annotations

import numpy as np

from charlm.config import ModelConfig
from charlm.nn.cells import CELL_TYPES
from charlm.nn.softmax import shapes as softmax_shapes


def initial_matrix(rng: np.random.Generator, shape, init: str, recurrent_rows: int = 0) -> np.ndarray:
    """Starting values of one weight matrix.  For a cell kernel ``[in + H, gates * H]``,
    ``recurrent_rows`` is H: the "orthogonal" scheme treats those rows apart."""
    if init == "notebook":
        # ud730 writes tf.truncated_normal(shape, -0.1, 0.1): mean -0.1, sd 0.1, cut at 2 sd.
        values = rng.normal(-0.1, 0.1, size=shape)
        bad = np.abs(values + 0.1) > 0.2
        while bad.any():
            values[bad] = rng.normal(-0.1, 0.1, size=int(bad.sum()))
            bad = np.abs(values + 0.1) > 0.2
        return values
    if init == "orthogonal":
        # Keras' LSTM defaults: Glorot-uniform input (and output) weights; the recurrent rows
        # [H, gates * H] orthonormal (the transposed Q of a Gaussian [gates * H, H], signs fixed by R's diagonal).
        rows, cols = shape
        fan_in = rows - recurrent_rows
        limit = np.sqrt(6.0 / (fan_in + cols))
        values = rng.uniform(-limit, limit, size=(fan_in, cols))
        if not recurrent_rows:
            return values
        q, r = np.linalg.qr(rng.normal(size=(cols, recurrent_rows)))
        return np.concatenate([values, (q * np.sign(np.diag(r))).T], axis=0)
    return rng.uniform(-0.08, 0.08, size=shape)


def initial_weights(config: ModelConfig, num_tokens: int, seed: int = 0) -> dict:
    """The starting weights of ``CharLM(config, num_tokens, seed)`` as numpy arrays (float64).

    ``embedding`` (or None), ``kernels`` (one ``[in + H, gates * H]`` per layer, gate columns as
    the cell declares them) and ``softmax`` (the output layer's matrices by name,
    :func:`charlm.nn.softmax.shapes`: a full softmax's ``out_w``, also given as ``out_w``), drawn
    in that order from one generator; the biases start at zero.  The notebook benchmark starts its
    graph from these too.
    """
    rng = np.random.default_rng(seed)
    h = config.hidden
    gates = CELL_TYPES[config.cell].gates
    embedding = None
    size = num_tokens
    if config.embedding_size:
        embedding = rng.uniform(-1.0, 1.0, size=(num_tokens, config.embedding_size))
        size = config.embedding_size
    kernels = []
    for _ in range(config.layers):
        kernels.append(initial_matrix(rng, (size + h, gates * h), config.init, recurrent_rows=h))
        size = h
    layer = {name: initial_matrix(rng, shape, config.init)
             for name, shape in softmax_shapes(config.softmax, h, num_tokens, config.softmax_cutoffs).items()}
    return {"embedding": embedding, "kernels": kernels, "softmax": layer, "out_w": layer.get("out_w")}
