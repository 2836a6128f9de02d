#!/usr/bin/env python
"""Peer: text generation from a PyTorch nn.LSTM, one character per step, as a PyTorch user loops it.

The model has charlm's large shape (65 symbols, embedding 64, 512 units, one layer) and its
starting weights: the figure is a speed, what the weights say does not matter.  Each step embeds
the last character, advances nn.LSTM by one step with its carried state, applies the output layer
and softmax, and draws the next character with torch.multinomial, all under inference_mode.

usage: python benchmarks/peers/torch_sample.py LENGTH [BATCH]   (BATCH sequences at once; default 1)
prints one line: characters per second (over all sequences) and microseconds per step.
"""
import sys
import time

import torch
from torch import nn

VOCAB, EMBEDDING, NODES = 65, 64, 512


def main(argv):
    if not argv:
        sys.exit(__doc__.split("usage: ")[1].split("\n")[0])
    length = int(argv[0])
    batch = int(argv[1]) if len(argv) > 1 else 1
    torch.manual_seed(0)
    embed, lstm, logits = nn.Embedding(VOCAB, EMBEDDING), nn.LSTM(EMBEDDING, NODES, 1), nn.Linear(NODES, VOCAB)
    with torch.inference_mode():
        last = torch.zeros(1, batch, dtype=torch.long)           # [time 1, batch]
        state = None
        started = time.perf_counter()
        for _ in range(length):
            hidden, state = lstm(embed(last), state)
            probabilities = torch.softmax(logits(hidden[0]), dim=-1)
            last = torch.multinomial(probabilities, 1).T
        seconds = time.perf_counter() - started
    print(f"torch sample B={batch}: {length * batch / seconds:.0f} chars/s ({seconds * 1e6 / length:.0f} us/step)")


if __name__ == "__main__":
    main(sys.argv[1:])
