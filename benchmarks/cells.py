#!/usr/bin/env python
"""The three cells at equal wall time: held-out text8 bits per character after --time-limit seconds.

    python benchmarks/cells.py --corpus /work/data/text8-first10M.txt
    python benchmarks/cells.py --hidden 128 256 --cells rnn gru lstm --time-limit 150 --keep runs/

For each width and cell: `cli.py train --cell C --hidden H ... --time-limit T` on the corpus's first
--train characters (9M), then `cli.py eval --json` of that run on the --heldout characters after
them (the last 1M of text8's first 10M).  Every run has the same settings apart from the cell, so
the cheaper cells take more steps in the same time.  Prints one line per run (steps, characters
seen, held-out bits/char) and the commands that produced it.
The corpus: --corpus, $CHARLM_BENCH_CORPUS, or ../shared/data/text8-first10M.txt.gz.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, find_corpus, read_corpus  # noqa: E402
from quality import last_json  # noqa: E402

sys.path.insert(0, str(ROOT))
from charlm.config import CELLS  # noqa: E402  (no TensorFlow import)

# One-hot characters, one layer, Adam: only --cell and --hidden change between runs.
SETTINGS = ["--model", "char", "--embedding-size", "0", "--layers", "1", "--init", "orthogonal",
            "--optimizer", "adam", "--learning-rate", "0.002", "--decay-rate", "1", "--clip", "5",
            "--batch-size", "64", "--unrollings", "50", "--steps", "1000000", "--valid-size", "2000",
            "--log-every", "500", "--sample-every", "0", "--checkpoint-every", "0"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="text8 (or its first 10M characters); see benchmarks/common.py")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[256])
    parser.add_argument("--time-limit", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train", type=int, default=9_000_000, help="training characters (from the start)")
    parser.add_argument("--heldout", type=int, default=1_000_000, help="held-out characters (after --train)")
    parser.add_argument("--keep", help="folder for the run folders and the split (default: a temporary one)")
    args = parser.parse_args()
    if min(args.hidden) < 1 or args.time_limit <= 0 or args.train < 1 or args.heldout < 1:
        parser.error("--hidden, --time-limit, --train and --heldout must be positive")
    text = read_corpus(find_corpus(args.corpus), args.train + args.heldout)
    if len(text) < args.train + args.heldout:
        parser.error(f"the corpus has {len(text):,} characters, fewer than --train + --heldout")
    with tempfile.TemporaryDirectory(prefix="charlm-cells-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_file, heldout_file = work / "train.txt", work / "heldout.txt"
        train_file.write_text(text[:args.train], encoding="utf-8")
        heldout_file.write_text(text[args.train:], encoding="utf-8")
        rows = []
        for hidden in args.hidden:
            for cell in args.cells:
                run = work / f"{cell}-{hidden}" if args.seed == 1 else work / f"{cell}-{hidden}-seed{args.seed}"
                train = ["cli.py", "train", "--corpus", train_file, "--checkpoint-dir", run, "--cell", cell,
                         "--hidden", hidden, *SETTINGS, "--seed", args.seed, "--time-limit", args.time_limit]
                result = last_json(train)
                score = last_json(["cli.py", "eval", "--checkpoint", run, "--text-file", heldout_file, "--json"])
                row = {"cell": cell, "hidden": hidden, "steps": result["step"], "seconds": result["seconds"],
                       "chars_seen": result["step"] * 64 * 50, "heldout_bpc": score["bits_per_char"],
                       "train_cmd": " ".join(map(str, train)), "run": str(run)}
                rows.append(row)
                print(f"{cell:<5} H={hidden:<4} {row['steps']:>6} steps  {row['seconds']:6.1f} s  "
                      f"{row['chars_seen'] / 1e6:6.2f}M chars  held-out {row['heldout_bpc']:.4f} bits/char",
                      flush=True)
    print("\n| cell | hidden | steps in the time | characters trained on | held-out bits/char |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cell']} | {r['hidden']} | {r['steps']:,} | {r['chars_seen'] / 1e6:.2f}M | {r['heldout_bpc']:.3f} |")
    print("\ncommands (FILE: the corpus's first --train characters, HELDOUT: the --heldout after them):")
    print(f"  python cli.py train --corpus FILE --checkpoint-dir RUN --cell CELL --hidden H "
          f"{' '.join(SETTINGS)} --seed {args.seed} --time-limit {args.time_limit:g}")
    print("  python cli.py eval --checkpoint RUN --text-file HELDOUT --json")
    print(json.dumps({"rows": [{k: v for k, v in r.items() if k != "train_cmd"} for r in rows]}))


if __name__ == "__main__":
    main()
