"""A model as plain named arrays and a token table: what leaves charlm for other runtimes.

The web page (:mod:`charlm.use.web`) and the LiteRT file (:mod:`charlm.use.tflite`) run the step
of :meth:`charlm.nn.model.CharLM.step` outside TensorFlow's Python: one token and the state in,
the next token's logits and the new state out.  This module says which arrays that step reads
and how tokens map to text, once for both.

Arrays (float32, names as in the web manifest):

* the input half of layer 0: ``input`` ``[tokens, gates * H]`` (the lookup table of
  :meth:`~charlm.nn.model.CharLM.step_weights`, bias folded in), or, when that table would be
  bigger than the embedding and the kernel rows apart (many tokens, a narrow embedding),
  ``embedding`` ``[tokens, E]`` with ``w_x0`` ``[E, gates * H]`` and ``b0``;
* per layer ``l``: ``w_h{l}`` ``[H, gates * H]``; above layer 0 ``w_x{l}`` ``[H, gates * H]`` and
  ``b{l}``; a GRU's ``b_hn{l}`` ``[H]`` (the candidate's bias inside the reset);
* the output layer (:func:`output_arrays`): ``out_w`` ``[H, tokens]`` and ``out_b``.

Gate columns keep the cells' order (:mod:`charlm.nn.cells`): LSTM ``[i | f | g | o]``, GRU
``[z | r | n]``.
"""
from __future__ import annotations

import numpy as np

FORMAT = "charlm-portable"
VERSION = 1


def _np(t) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=np.float32)


def output_arrays(model) -> dict[str, np.ndarray]:
    """The output layer's arrays: the logits are ``h_top @ out_w + out_b``."""
    return {"out_w": _np(model.out_w), "out_b": _np(model.out_b)}


def step_arrays(model) -> dict[str, np.ndarray]:
    """Every array the step reads, in the order the step reads them."""
    import tensorflow as tf

    gates_h = model.cells[0].gates * model.config.hidden
    arrays = {}
    first = model.cells[0]
    w_x0, _ = first.split()
    if model.embedding is not None and model.num_tokens * gates_h > model.embedding.shape.num_elements() + w_x0.shape.num_elements():
        arrays.update(embedding=_np(model.embedding), w_x0=_np(w_x0), b0=_np(first.bias))
    else:
        table = w_x0 if model.embedding is None else tf.matmul(model.embedding, w_x0)
        arrays["input"] = _np(table + first.bias)
    for layer, cell in enumerate(model.cells):
        w_x, w_h = cell.split()
        if layer:
            arrays[f"w_x{layer}"] = _np(w_x)
            arrays[f"b{layer}"] = _np(cell.bias)
        arrays[f"w_h{layer}"] = _np(w_h)
        for param in cell.params():        # the GRU's recurrent bias
            arrays[f"b_hn{layer}"] = _np(param)
    arrays.update(output_arrays(model))
    return arrays


def token_table(tokenizer) -> dict:
    """How text becomes tokens and back, for code that has no charlm.

    ``chars``: the vocabulary (character id = position); ``tokens``: each token's text (one
    character, or a pair); ``kind`` and ``layout`` (``char``, ``dense``: every pair ``a * V + b``,
    ``sparse``: the single characters then the pairs of the training text) say how a prime is
    cut (:class:`charlm.data.vocab.Tokenizer`).
    """
    chars = tokenizer.vocab.chars
    v = len(chars)
    if tokenizer.kind == "char":
        layout, tokens = "char", list(chars)
    elif tokenizer.sparse:
        layout = "sparse"
        tokens = list(chars) + [chars[a] + chars[b] for a, b in zip(tokenizer.first[v:].tolist(),
                                                                     tokenizer.second[v:].tolist())]
    else:
        layout, tokens = "dense", [a + b for a in chars for b in chars]
    return {"kind": tokenizer.kind, "layout": layout, "chars": chars, "tokens": tokens}


def describe(model, tokenizer, name: str) -> dict:
    """The model's shape and identity, for a manifest."""
    config = model.config
    return {"format": FORMAT, "version": VERSION, "name": name, "cell": config.cell,
            "layers": config.layers, "hidden": config.hidden, "gates": model.cells[0].gates,
            "embedding_size": config.embedding_size,
            "num_tokens": model.num_tokens, "parameters": model.num_parameters(),
            **token_table(tokenizer)}
