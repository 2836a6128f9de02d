#!/usr/bin/env python
"""Peer: charlm's character LSTM as a PyTorch user writes it, trained on a CPU.

    ids -> nn.Embedding(vocab, embedding) -> nn.LSTM(embedding, nodes, layers) -> nn.Linear(nodes, vocab)

nn.LSTM is PyTorch's own fused LSTM (oneDNN kernels on a CPU), the fastest stock path there is.
Training: Adam at 2e-3, gradients clipped to global norm 1.0, truncated backpropagation through
time with the (h, c) state carried from one window to the next, detached.  Windows follow the
ud730 notebook's batches: batch cursors spaced len(text) // batch apart, unroll + 1 ids per row,
each window's first id the previous window's last; the first 1000 characters are held out.

usage: python benchmarks/peers/torch_lstm.py CORPUS STEPS [nodes batch unroll layers embedding]
       (defaults 64 64 10 1, embedding = nodes; CORPUS plain text, .gz or a one-file .zip)
prints one line: train chars/s and steps/s over steps 11..STEPS (the first 11 warm up) and the
last loss.  Run it with a Python that has torch, not charlm's (benchmarks/peers/README.md).
"""
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from common import read_corpus  # noqa: E402  (standard library only)

WARM_UP = 11
HELD_OUT = 1000


class CharLSTM(nn.Module):
    def __init__(self, vocab, embedding, nodes, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, nodes, layers)      # time-major: [unroll, batch, features]
        self.logits = nn.Linear(nodes, vocab)

    def forward(self, ids, state):
        hidden, state = self.lstm(self.embed(ids), state)
        return self.logits(hidden), state


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__.split("usage: ")[1].split("\n")[0])
    corpus, steps = argv[0], int(argv[1])
    shape = [int(v) for v in argv[2:7]]
    nodes, batch, unroll, layers = (shape[:4] + [64, 64, 10, 1][len(shape[:4]):])
    embedding = shape[4] if len(shape) > 4 else nodes
    if steps <= WARM_UP:
        sys.exit(f"STEPS must be more than {WARM_UP} (the first {WARM_UP} are not timed)")

    text = read_corpus(corpus)
    symbols = sorted(set(text))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    table[[ord(c) for c in symbols]] = np.arange(len(symbols))
    ids = table[codes][HELD_OUT:]

    torch.manual_seed(1)
    model = CharLSTM(len(symbols), embedding, nodes, layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    state = (torch.zeros(layers, batch, nodes), torch.zeros(layers, batch, nodes))
    cursor = np.arange(batch, dtype=np.int64) * (ids.size // batch)
    window = np.arange(unroll + 1, dtype=np.int64)[:, None]

    for step in range(steps):
        if step == WARM_UP:
            started = time.perf_counter()
        block = torch.from_numpy(ids[(cursor[None, :] + window) % ids.size])     # [unroll + 1, batch]
        cursor = (cursor + unroll) % ids.size
        logits, state = model(block[:-1], state)
        state = (state[0].detach(), state[1].detach())
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(symbols)), block[1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    last = loss.item()
    seconds = time.perf_counter() - started
    timed = steps - WARM_UP
    print(f"torch train chars/s {timed * batch * unroll / seconds:.0f} steps/s {timed / seconds:.2f} "
          f"last loss {last:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
