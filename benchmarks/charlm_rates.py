#!/usr/bin/env python
"""charlm's sampling and evaluation rates for a ud730-sized model (start-up and compilation excluded)."""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import find_corpus, read_corpus  # noqa: E402

from charlm.runtime import import_tensorflow_quietly, set_threads  # noqa: E402

import_tensorflow_quietly()
set_threads(1)
from charlm.config import ModelConfig  # noqa: E402
from charlm.use.scoring import Scorer  # noqa: E402
from charlm.nn.model import CharLM  # noqa: E402
from charlm.use.sampling import Sampler  # noqa: E402
from charlm.data.vocab import Tokenizer, Vocabulary  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corpus")
    p.add_argument("--sample-chars", type=int, default=200_000)
    p.add_argument("--eval-chars", type=int, default=2_500_000)
    a = p.parse_args()
    text = read_corpus(find_corpus(a.corpus), 7_500_000 + a.eval_chars)[-a.eval_chars:]
    vocab = Vocabulary.from_text(text)
    tok = Tokenizer("char", vocab)
    model = CharLM(ModelConfig(), tok.num_tokens)
    sampler, scorer = Sampler(model, tok), Scorer(model, tok)
    out = {}
    for n in (1, 8):
        sampler.generate("the ", 1000, seed=0, num_samples=n)             # compile
        t0 = time.perf_counter()
        sampler.generate("the ", a.sample_chars, seed=1, num_samples=n)
        out["sample_chars_per_sec" if n == 1 else "sample8_chars_per_sec"] = a.sample_chars / (time.perf_counter() - t0)
    ids = vocab.encode(text)
    scorer.score_ids(ids[:scorer.chunk])                                   # compile
    t0 = time.perf_counter()
    score = scorer.score_ids(ids)
    out["eval_chars_per_sec"] = ids.size / (time.perf_counter() - t0)
    out["eval_nats_per_char"] = score.nats_per_char
    print(json.dumps(out))


if __name__ == "__main__":
    main()
