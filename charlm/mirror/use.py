"""Using a trained mirror model: greedy decoding (compiled), long lines cut at spaces, accuracy.

Greedy decoding is a compiled while-loop (``tf.function``) over :data:`DECODE_BATCH` lines at a
time, sorted by length so a call's padding stays small.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.errors import CharlmError
from charlm.mirror.data import cut_lines, mirror_words, pad_rows
from charlm.mirror.folder import read_mirror_config, restore
from charlm.mirror.model import MirrorNet
from charlm.run import checkpoint as ckpt

DECODE_BATCH = 256       # lines per greedy-decoding call


def pieces(line: str, max_chars: int) -> list[str]:
    """``line`` cut at spaces into pieces of at most ``max_chars`` characters (a longer word stays whole).

    Mirroring is per word, so mirroring the pieces and joining them with spaces mirrors the line.
    """
    if len(line) <= max_chars:
        return [line]
    out, current = [], None
    for word in line.split(" "):
        if current is not None and len(current) + 1 + len(word) <= max_chars:
            current += " " + word
        else:
            if current is not None:
                out.append(current)
            current = word
    out.append(current)
    return out


class Mirror:
    """A trained mirror model: :meth:`lines` mirrors lines with greedy decoding (compiled)."""

    def __init__(self, checkpoint):
        info = read_mirror_config(checkpoint)
        self.cfg, self.vocab = info["config"], info["vocabulary"]
        self.net = MirrorNet(self.cfg, self.vocab.size)
        path = ckpt.latest_checkpoint(checkpoint)
        restore(tf.train.Checkpoint(model=self.net), path, "cannot load the weights in")
        self.checkpoint_path = path
        self._greedy = tf.function(self.net.greedy, reduce_retracing=True, autograph=False)

    def lines(self, lines: list[str], oov: str = "error") -> list[str]:
        """Each line mirrored (an empty line gives an empty line); long lines are cut at spaces."""
        jobs = []                       # (line number, piece ids)
        for n, line in enumerate(lines):
            if oov == "error":
                self.vocab.encode(line, what=f"line {n + 1}")     # names every unknown character
            for piece in pieces(line, self.cfg.max_chars):
                ids = self.vocab.encode(piece, oov=oov)
                jobs.append((n, ids.astype(np.int32)))
        outputs = [[] for _ in lines]
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][1]))
        texts = [""] * len(jobs)
        for i in range(0, len(order), DECODE_BATCH):
            chunk = [j for j in order[i:i + DECODE_BATCH] if len(jobs[j][1])]
            if not chunk:
                continue
            src, lengths = pad_rows([jobs[j][1] for j in chunk])
            max_steps = int(lengths.max()) + 1 + max(8, int(lengths.max()) // 4)
            out = self._greedy(tf.constant(src), tf.constant(lengths), tf.constant(max_steps)).numpy()
            for j, row in zip(chunk, out):
                end = np.flatnonzero(row == self.net.eos)
                texts[j] = self.vocab.decode(row[:end[0] if end.size else len(row)])
        for (n, _), text in zip(jobs, texts):
            outputs[n].append(text)
        return [" ".join(parts) for parts in outputs]

    def evaluate(self, sources: list[str]) -> dict:
        return accuracy(sources, self.lines(sources))


def accuracy(sources: list[str], outputs: list[str]) -> dict:
    """Per-character, per-word and exact-line accuracy of ``outputs`` against the mirrored ``sources``."""
    chars = chars_ok = words = words_ok = lines_ok = 0
    for source, output in zip(sources, outputs):
        expected = mirror_words(source)
        chars += len(expected)
        chars_ok += sum(a == b for a, b in zip(expected, output))
        want, got = expected.split(" "), output.split(" ")
        words += len(want)
        words_ok += sum(a == b for a, b in zip(want, got))
        lines_ok += expected == output
    n = len(sources)
    return {"lines": n, "words": words, "characters": chars,
            "char_accuracy": chars_ok / max(chars, 1), "word_accuracy": words_ok / max(words, 1),
            "line_accuracy": lines_ok / max(n, 1)}


def mirror_text(text, checkpoint, oov: str = "error"):
    """Mirror every word of ``text`` (one string, or a list of lines) with the model in ``checkpoint``.

    ``charlm.mirror_text("the quick brown fox", "checkpoints/mirror")`` -> ``"eht kciuq nworb xof"``.
    A string is mirrored line by line (newlines kept).
    """
    model = Mirror(checkpoint)
    if isinstance(text, str):
        return "\n".join(model.lines(text.split("\n"), oov=oov))
    return model.lines(list(text), oov=oov)


def evaluate(checkpoint, text: str, lines: int | None = 2000, seed: int = 0, oov: str = "error") -> dict:
    """``mirror eval``: accuracy on lines cut from ``text`` (1..max_words words each)."""
    model = Mirror(checkpoint)
    text = " ".join(text.split())          # lines are made of words: other whitespace is not text
    text = model.vocab.decode(model.vocab.encode(text, oov=oov, what="evaluation text"))
    sources = cut_lines(text, lines, seed, model.cfg.max_words, model.cfg.max_chars)
    if not sources:
        raise CharlmError("the evaluation text has no words")
    return model.evaluate(sources)



# the Python API's name (``charlm.evaluate_mirror``)
evaluate_mirror = evaluate
