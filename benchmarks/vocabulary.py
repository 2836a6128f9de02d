#!/usr/bin/env python
"""Vocabularies of a large alphabet: tokens of the char and bigram vocabularies with every
character and every pair seen (``--byte-fallback off --min-pair-count 1``, no cap) and with the
defaults (byte fallback auto, ``--min-char-count 10``, ``--min-pair-count 20``, ``--max-tokens
16384``), and the held-out characters each can score.

    python benchmarks/make_corpora.py /tmp/corpora            # zh.txt: fortunes-zh
    python benchmarks/vocabulary.py /tmp/corpora/zh.txt --split-into /tmp/zh

The text's first 90% is the training text, the rest held out (as ``budget.py --text`` splits it);
``--split-into DIR`` also writes them as ``train.txt``, ``held.txt`` and ``held_seen.txt`` (the
held-out text without the characters the training text lacks) for the ``cli.py`` runs of
benchmarks/README.md ("Large alphabets").  Prints one JSON line.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charlm.data.vocab import Tokenizer, Vocabulary  # noqa: E402

SETTINGS = {"every character and pair": dict(min_count=1, byte_fallback="off", pairs=(1, None)),
            "defaults": dict(min_count=10, byte_fallback="auto", pairs=(20, 16384))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text")
    parser.add_argument("--split-into", type=Path)
    args = parser.parse_args()
    text = Path(args.text).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train, held = text[:cut], text[cut:]
    seen = set(train)
    if args.split_into:
        args.split_into.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", train), ("held", held), ("held_seen", "".join(c for c in held if c in seen))):
            (args.split_into / f"{name}.txt").write_text(part, encoding="utf-8")
    out = {"train_chars": len(train), "train_distinct": len(seen), "held_chars": len(held),
           "held_unseen": sum(c not in seen for c in held), "held_unseen_distinct": len(set(held) - seen)}
    for label, s in SETTINGS.items():
        began = time.perf_counter()
        vocab = Vocabulary.from_text(train, s["min_count"], s["byte_fallback"])
        ids = vocab.encode(train)
        bigram = Tokenizer.for_ids("bigram", vocab, ids, *s["pairs"])
        held_ids = vocab.encode(held, oov="bytes" if vocab.bytes else "skip")
        out[label] = {"characters": vocab.num_chars, "byte_tokens": 256 * vocab.bytes,
                      "char_tokens": vocab.size, "bigram_tokens": bigram.num_tokens,
                      "bigram_tokens_of_training_text": int(bigram.tokens(ids).size),
                      "held_chars_scored": vocab.characters(held_ids),
                      "seconds": round(time.perf_counter() - began, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
