"""Independent references for the numerics tests: the notebook's four-matmul cell and a plain
numpy forward pass of the whole model, written without TensorFlow or charlm's model code."""
import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def four_matmul_cell(x, o, state, ix, im, ib, fx, fm, fb, cx, cm, cb, ox, om, ob):
    """ud730's cell before problem 1: one matmul pair per gate."""
    input_gate = sigmoid(x @ ix + o @ im + ib)
    forget_gate = sigmoid(x @ fx + o @ fm + fb)
    update = x @ cx + o @ cm + cb
    state = forget_gate * state + input_gate * np.tanh(update)
    output_gate = sigmoid(x @ ox + o @ om + ob)
    return output_gate * np.tanh(state), state


def split_gates(kernel, bias, input_size):
    """The single kernel ``[in + H, 4H]`` as the notebook's twelve per-gate matrices."""
    h = kernel.shape[1] // 4
    parts = []
    for g in range(4):   # input gate, forget gate, update, output gate
        cols = slice(g * h, (g + 1) * h)
        parts += [kernel[:input_size, cols], kernel[input_size:, cols], bias[cols]]
    return parts


def numpy_forward(weights, tokens, num_tokens, embedding=False, state=None):
    """Logits ``[T, B, V]`` and final state of the model, from numpy copies of its weights.

    ``weights``: dict with ``embedding`` (optional), ``cells`` = list of (kernel, bias),
    ``out_w``, ``out_b``.
    """
    tokens = np.asarray(tokens)
    x = weights["embedding"][tokens] if embedding else np.eye(num_tokens)[tokens]
    steps, batch = tokens.shape
    new_state = []
    for layer, (kernel, bias) in enumerate(weights["cells"]):
        hidden = kernel.shape[1] // 4
        gates = split_gates(kernel, bias, x.shape[-1])
        h, c = (np.zeros((batch, hidden)), np.zeros((batch, hidden))) if state is None else state[layer]
        outs = []
        for t in range(steps):
            h, c = four_matmul_cell(x[t], h, c, *gates)
            outs.append(h)
        x = np.stack(outs)
        new_state.append((h, c))
    return x @ weights["out_w"] + weights["out_b"], new_state


def weights_of(model):
    return {
        "embedding": None if model.embedding is None else model.embedding.numpy(),
        "cells": [(c.kernel.numpy(), c.bias.numpy()) for c in model.cells],
        "out_w": model.out_w.numpy(),
        "out_b": model.out_b.numpy(),
    }


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def tanh_cell(x, h, wx, wh, b):
    """Elman RNN, two matmuls: ``tanh(x @ Wx + h @ Wh + b)``."""
    return np.tanh(x @ wx + h @ wh + b)


def gru_cell(x, h, zx, zh, zb, rx, rh, rb, nx, nh, nb, nrb):
    """GRU with the reset gate applied after the recurrent product (one matmul pair per gate)."""
    update = sigmoid(x @ zx + h @ zh + zb)
    reset = sigmoid(x @ rx + h @ rh + rb)
    candidate = np.tanh(x @ nx + nb + reset * (h @ nh + nrb))
    return update * h + (1.0 - update) * candidate


def split_columns(kernel, bias, input_size, gates):
    """A single kernel ``[in + H, gates * H]`` as per-gate ``(Wx, Wh, b)`` triples, flattened."""
    h = kernel.shape[1] // gates
    parts = []
    for g in range(gates):
        cols = slice(g * h, (g + 1) * h)
        parts += [kernel[:input_size, cols], kernel[input_size:, cols], bias[cols]]
    return parts


def numpy_forward_cells(weights, tokens, num_tokens, cell, embedding=False, state=None):
    """``numpy_forward`` for ``cell`` "gru" or "rnn": logits and the final ``h`` per layer.

    ``weights["cells"]``: (kernel, bias) for rnn, (kernel, bias, recurrent_bias) for gru.
    """
    tokens = np.asarray(tokens)
    x = weights["embedding"][tokens] if embedding else np.eye(num_tokens)[tokens]
    steps, batch = tokens.shape
    new_state = []
    for layer, (kernel, bias, *extra) in enumerate(weights["cells"]):
        gates = 3 if cell == "gru" else 1
        hidden = kernel.shape[1] // gates
        parts = split_columns(kernel, bias, x.shape[-1], gates)
        h = np.zeros((batch, hidden)) if state is None else state[layer]
        outs = []
        for t in range(steps):
            h = gru_cell(x[t], h, *parts, *extra) if cell == "gru" else tanh_cell(x[t], h, *parts)
            outs.append(h)
        x = np.stack(outs)
        new_state.append(h)
    return x @ weights["out_w"] + weights["out_b"], new_state


def cell_weights_of(model):
    """``weights_of`` for GRU/RNN models (a GRU layer adds its recurrent bias)."""
    extra = lambda c: (c.recurrent_bias.numpy(),) if hasattr(c, "recurrent_bias") else ()  # noqa: E731
    return {**weights_of(model), "cells": [(c.kernel.numpy(), c.bias.numpy(), *extra(c)) for c in model.cells]}


def filtered_probs(logits, temperature, top_k=0, top_p=1.0):
    """The distribution sampling draws from, row by row, written out plainly: the softmax at
    1/temperature, cut to the k likeliest tokens and renormalised, then cut to the shortest
    prefix of the likeliest tokens whose probability reaches top_p and renormalised."""
    out = []
    for row in np.asarray(logits, dtype=np.float64):
        z = row / temperature
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        order = list(np.argsort(-probs, kind="stable"))
        if top_k:
            order = order[:top_k]
        kept = np.zeros_like(probs)
        kept[order] = probs[order]
        kept /= kept.sum()
        if top_p < 1:
            total, nucleus = 0.0, []
            for i in order:
                nucleus.append(i)
                total += kept[i]
                if total >= top_p:
                    break
            cut = np.zeros_like(kept)
            cut[nucleus] = kept[nucleus]
            kept = cut / cut.sum()
        out.append(kept)
    return np.array(out)
