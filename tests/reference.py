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
