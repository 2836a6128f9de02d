"""Full against adaptive softmax (charlm.nn.softmax) on large vocabularies, at ``--preset fast``'s shape.

Each part prints markdown rows (and one JSON line per figure on stdout):

* ``steps``: training step time, 512 units, batch 64 x 50 unrollings, Adam, as ``--preset fast``
  trains, on a Zipfian text over 1,000 / 6,000 / 20,000 characters (``--tokens``) and on
  fortunes-zh (``--fortunes``); the runs of a size are timed in interleaved repeats (A, B, A, B).
* ``cutoffs``: the step time and held-out loss of several head sizes on fortunes-zh.
* ``quality``: held-out nats per character after ``--seconds`` of ``--preset fast`` training,
  full against adaptive, on fortunes-zh (90% / 10%) and on the Zipfian texts.
* ``sample``: one-sequence sampling, chars/s, 512 units, 6,000 tokens (and a 100-token model).
* ``eval``: long-text scoring, chars/s, 512 units: 6,000 tokens full and adaptive, 100 tokens.
* ``floor``: fortunes-zh's full and adaptive steps beside a 100-token model's (where the time goes).
* ``xla``: an XLA-compiled adaptive step (charlm's choice for small models) against the same step
  without XLA.
* ``embedding``: the step time of ``--preset fast`` over a large alphabet (384 units, adaptive
  softmax) at several embedding sizes (``--embeddings``), interleaved, on the first 90% of
  ``--text`` (default: fortunes-zh): what sets the step counts of equal-time runs.

    python benchmarks/softmax.py steps quality sample eval
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlm.runtime import import_tensorflow_quietly  # noqa: E402

FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_FILES = ("tang300", "song100", "chinese")


def quiet(*_args, **_kwargs):
    pass


def zipf_text(n: int, distinct: int, seed: int = 0) -> str:
    """``n`` characters over ``distinct`` CJK code points, Zipfian (exponent 1), each at least once."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, distinct + 1)
    ids = rng.choice(distinct, size=n, p=p / p.sum())
    ids[rng.permutation(n)[:distinct]] = np.arange(distinct)
    return "".join(map(chr, 0x4E00 + ids))


def fortunes_text() -> str:
    """Debian's fortunes-zh, entries joined by newlines (the ``%`` separators left out)."""
    parts = []
    for name in FORTUNE_FILES:
        lines = (FORTUNES / name).read_text(encoding="utf-8").splitlines()
        parts.append("\n".join(line for line in lines if line.strip() != "%"))
    return "\n".join(parts)


def split(text: str):
    """90% for training, the last 10% held out."""
    cut = len(text) * 9 // 10
    return text[:cut], text[cut:]


def trainer_for(text: str, softmax: str, cutoffs=(), hidden: int = 512, run_dir=None, **overrides):
    """A ``--preset fast`` Trainer (512 units, 64 x 50) on ``text``, ready to time its blocks."""
    from charlm.config import build_configs
    from charlm.training.trainer import Trainer

    model_cfg, train_cfg = build_configs("fast", hidden=hidden, softmax=softmax, softmax_cutoffs=list(cutoffs) or None,
                                         valid_size=0, auto_dropout=False, **overrides)
    run_dir = run_dir or tempfile.mkdtemp(prefix="charlm-softmax-bench-")
    return Trainer(model_cfg, train_cfg, text, run_dir, log=quiet)


def time_blocks(trainers: dict, steps: int, repeat: int) -> dict:
    """Seconds per step of each trainer: one block to compile (of the same length: XLA compiles
    each length), then ``repeat`` interleaved blocks."""
    from charlm.training.budget import Budget

    budgets = {name: Budget(10**9) for name in trainers}
    for name, trainer in trainers.items():
        trainer._block(steps, budgets[name])
    times = {name: [] for name in trainers}
    for _ in range(repeat):
        for name, trainer in trainers.items():
            began = time.perf_counter()
            trainer._block(steps, budgets[name])
            times[name].append((time.perf_counter() - began) / steps)
    return times


def emit(record: dict):
    print(json.dumps(record), flush=True)


def part_steps(args):
    texts = {f"zipf {v:,}": zipf_text(args.chars, v, seed=v) for v in args.tokens}
    if args.fortunes and FORTUNES.is_dir():
        texts["fortunes-zh"] = split(fortunes_text())[0]
    rows = []
    for label, text in texts.items():
        trainers = {kind: trainer_for(text, kind) for kind in ("full", "adaptive")}
        tokens = trainers["full"].tokenizer.num_tokens
        cutoffs = trainers["adaptive"].model_cfg.softmax_cutoffs
        times = time_blocks(trainers, args.steps, args.repeat)
        full, adaptive = (float(np.median(times[k])) for k in ("full", "adaptive"))
        emit({"part": "steps", "text": label, "tokens": tokens, "cutoffs": cutoffs, "full": times["full"],
              "adaptive": times["adaptive"]})
        rows.append(f"| {label} | {tokens:,} | {','.join(map(str, cutoffs))} | {full * 1000:.0f} | "
                    f"{adaptive * 1000:.0f} | **{full / adaptive:.2f}x** |")
        del trainers
    print("| text | tokens | cutoffs | full ms/step | adaptive ms/step | speed-up |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows), flush=True)


def part_floor(args):
    """Where an adaptive step's time goes: fortunes-zh full and adaptive beside a 100-token text
    (the same model with a softmax too small to matter: what the recurrence and the update cost)."""
    trainers = {"fortunes-zh full": trainer_for(split(fortunes_text())[0], "full"),
                "fortunes-zh adaptive": trainer_for(split(fortunes_text())[0], "adaptive"),
                "100 tokens, full": trainer_for(zipf_text(args.chars, 100, seed=100), "full")}
    times = time_blocks(trainers, args.steps, args.repeat)
    print("| 512 units, 64 x 50, Adam | ms/step (interleaved repeats) | median |")
    print("|---|---|---|")
    for label, t in times.items():
        emit({"part": "floor", "model": label, "step_seconds": t})
        print(f"| {label} | {' / '.join(f'{x * 1000:.0f}' for x in t)} | **{float(np.median(t)) * 1000:.0f}** |",
              flush=True)


def held_out(run_dir, text: str) -> float:
    from charlm.use.scoring import evaluate

    score, _ = evaluate(run_dir, text=text, oov="skip")
    return score.nats_per_char


def train_for(text: str, seconds: float, run_dir, **overrides) -> dict:
    from charlm.training.trainer import train

    # blocks of 10 steps: the budget stops the run within its seconds however slow a step is
    result = train(text=text, checkpoint_dir=run_dir, preset="fast", time_limit=seconds, log=quiet,
                   steps_per_call=10, **overrides)
    return {"steps": result.step, "seconds": round(result.seconds, 1)}


def part_cutoffs(args):
    train_text, held = split(fortunes_text())
    rows = []
    choices = [[int(c) for c in spec.split(",")] for spec in args.heads]
    trainers = {",".join(map(str, c)): trainer_for(train_text, "adaptive", c) for c in choices}
    trainers["full"] = trainer_for(train_text, "full")
    times = time_blocks(trainers, args.steps, args.repeat)
    del trainers
    for name, t in times.items():
        with tempfile.TemporaryDirectory() as tmp:
            kind = dict(softmax="full") if name == "full" else dict(softmax="adaptive",
                                                                     softmax_cutoffs=[int(c) for c in name.split(",")])
            info = train_for(train_text, args.seconds, Path(tmp) / "run", **kind)
            nats = held_out(Path(tmp) / "run", held)
        emit({"part": "cutoffs", "cutoffs": name, "step_seconds": t, **info, "held_out": nats})
        rows.append(f"| {name} | {float(np.median(t)) * 1000:.0f} | {info['steps']:,} | {nats:.3f} |")
    print(f"| cutoffs | ms/step | steps in {args.seconds:g} s | held-out nats/char |")
    print("|---|---|---|---|")
    print("\n".join(rows), flush=True)


def part_quality(args):
    texts = {}
    if FORTUNES.is_dir():
        texts["fortunes-zh"] = split(fortunes_text())
    for v in args.quality_tokens:
        texts[f"zipf {v:,}"] = split(zipf_text(args.chars, v, seed=v))
    rows = []
    for label, (train_text, held) in texts.items():
        figures = {}
        for kind in ("full", "adaptive"):
            with tempfile.TemporaryDirectory() as tmp:
                info = train_for(train_text, args.seconds, Path(tmp) / "run", softmax=kind)
                figures[kind] = (info, held_out(Path(tmp) / "run", held))
            emit({"part": "quality", "text": label, "softmax": kind, **figures[kind][0], "held_out": figures[kind][1]})
        (fi, fn), (ai, an) = figures["full"], figures["adaptive"]
        rows.append(f"| {label} | {fi['steps']:,} | {fn:.3f} | {ai['steps']:,} | **{an:.3f}** |")
    print(f"| text ({args.seconds:g} s, --preset fast) | full: steps | full: held-out nats/char | "
          f"adaptive: steps | adaptive: held-out nats/char |")
    print("|---|---|---|---|---|")
    print("\n".join(rows), flush=True)


def _model(tokens: int, kind: str, hidden: int = 512, seed: int = 0):
    """An untrained ``--preset fast``-shaped model over ``tokens`` characters and its tokenizer
    (the ranking of an adaptive one: the token ids' order, a Zipfian text's)."""
    from charlm.config import build_configs
    from charlm.data.vocab import Tokenizer, Vocabulary
    from charlm.nn import softmax
    from charlm.nn.model import CharLM

    config, _ = build_configs("fast", hidden=hidden, softmax=kind)
    softmax.resolve(config, tokens)
    vocab = Vocabulary("".join(map(chr, 0x4E00 + np.arange(tokens))))
    tokenizer = Tokenizer.for_ids("char", vocab, np.arange(tokens))
    return CharLM(config, tokens, seed=seed), tokenizer, vocab


def part_sample(args):
    from charlm.use.sampling import Sampler

    samplers = {}
    for label, tokens, kind in (("6,000 full", 6000, "full"), ("6,000 adaptive", 6000, "adaptive"),
                                ("100 full", 100, "full")):
        model, tokenizer, vocab = _model(tokens, kind)
        samplers[label] = (Sampler(model, tokenizer), vocab.chars[0])
    rates = {label: [] for label in samplers}
    for sampler, prime in samplers.values():
        sampler.generate(prime=prime, length=200, seed=0)
    for _ in range(args.repeat):
        for label, (sampler, prime) in samplers.items():
            began = time.perf_counter()
            sampler.generate(prime=prime, length=args.length, seed=1)
            rates[label].append(args.length / (time.perf_counter() - began))
    print("| one sequence, 512 units | chars/s (interleaved repeats) | median |")
    print("|---|---|---|")
    for label, r in rates.items():
        emit({"part": "sample", "model": label, "chars_per_sec": r})
        print(f"| {label} | {' / '.join(f'{x:,.0f}' for x in r)} | **{float(np.median(r)):,.0f}** |", flush=True)


def part_eval(args):
    from charlm.use.scoring import Scorer

    scorers = {}
    for label, tokens, kind in (("6,000 full", 6000, "full"), ("6,000 adaptive", 6000, "adaptive"),
                                ("100 full", 100, "full")):
        model, tokenizer, vocab = _model(tokens, kind)
        ids = vocab.encode(zipf_text(args.eval_chars, tokens, seed=1))
        scorers[label] = (Scorer(model, tokenizer), ids)
    for scorer, ids in scorers.values():
        scorer.score_ids(ids[:20000])
    rates = {label: [] for label in scorers}
    for _ in range(args.repeat):
        for label, (scorer, ids) in scorers.items():
            began = time.perf_counter()
            scorer.score_ids(ids)
            rates[label].append(ids.size / (time.perf_counter() - began))
    print(f"| scoring {args.eval_chars:,} characters, 512 units | chars/s (interleaved repeats) | median |")
    print("|---|---|---|")
    for label, r in rates.items():
        emit({"part": "eval", "model": label, "chars_per_sec": r})
        print(f"| {label} | {' / '.join(f'{x:,.0f}' for x in r)} | **{float(np.median(r)):,.0f}** |", flush=True)


def part_xla(args):
    text = zipf_text(args.chars, 6000, seed=6000)
    trainers = {}
    for label, xla in (("adaptive, XLA", True), ("adaptive, no XLA", False)):
        trainer = trainer_for(text, "adaptive", hidden=256, unrollings=10)
        trainer.xla = xla
        trainer._train_fn = trainer._compile()
        trainers[label] = trainer
    times = time_blocks(trainers, args.steps * 10, args.repeat)
    print("| 256 units, 64 x 10, 6,000 tokens | ms/step (interleaved repeats) |")
    print("|---|---|")
    for label, t in times.items():
        emit({"part": "xla", "model": label, "step_seconds": t})
        print(f"| {label} | {' / '.join(f'{x * 1000:.1f}' for x in t)} |", flush=True)


def part_embedding(args):
    text = Path(args.text).read_text(encoding="utf-8") if args.text else fortunes_text()
    train_text, _ = split(text)
    trainers = {size: trainer_for(train_text, "adaptive", hidden=384, embedding_size=size) for size in args.embeddings}
    times = time_blocks(trainers, args.steps, args.repeat)
    print("| 384 units, adaptive softmax, 64 x 50 | ms/step (interleaved repeats) | median | against 64 |")
    print("|---|---|---|---|")
    base = float(np.median(times[args.embeddings[0]]))
    for size, t in times.items():
        emit({"part": "embedding", "embedding_size": size, "step_seconds": t})
        print(f"| embedding {size} | {' / '.join(f'{x * 1000:.0f}' for x in t)} | {float(np.median(t)) * 1000:.0f} "
              f"| {float(np.median(t)) / base:.2f}x |", flush=True)


PARTS = {"steps": part_steps, "embedding": part_embedding, "floor": part_floor, "cutoffs": part_cutoffs, "quality": part_quality, "sample": part_sample,
         "eval": part_eval, "xla": part_xla}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=sorted(PARTS))
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--tokens", type=ints, default=[1000, 6000, 20000], help="steps: vocabulary sizes")
    parser.add_argument("--quality-tokens", type=ints, default=[1000, 20000], help="quality: Zipfian vocabularies")
    parser.add_argument("--no-fortunes", dest="fortunes", action="store_false", help="steps: leave fortunes-zh out")
    parser.add_argument("--chars", type=int, default=1_000_000, help="characters of each Zipfian text")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--seconds", type=float, default=90, help="quality, cutoffs: training seconds per run")
    parser.add_argument("--heads", nargs="+", default=["256,1024", "512,2048", "1000,4000"],
                        help="cutoffs: the adaptive layouts to try")
    parser.add_argument("--length", type=int, default=4000, help="sample: characters per timed sample")
    parser.add_argument("--eval-chars", type=int, default=200_000, help="eval: characters of the scored text")
    parser.add_argument("--embeddings", type=ints, default=[64, 128, 256], help="embedding: sizes (the first is the base)")
    parser.add_argument("--text", help="embedding: the text (default: fortunes-zh)")
    args = parser.parse_args()
    import_tensorflow_quietly()
    for part in args.parts:
        PARTS[part](args)


if __name__ == "__main__":
    main()
