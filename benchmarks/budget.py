#!/usr/bin/env python
"""Quality per time: the held-out loss each preset reaches in --time-limit seconds, and its curve.

    python benchmarks/budget.py --corpus text8-first10M.txt --time-limit 150 --plot budget.png
    python benchmarks/budget.py --text fortunes.txt --presets fast small --time-limit 150 600

text8 (--corpus; default ../shared/data/text8-first10M.txt.gz): train on the first --train
characters (9M), score the --heldout characters after them (1M).  --text FILE instead: train on
its first 90% (--fraction), score the rest.  Each run is
`cli.py train --preset P --corpus TRAIN --time-limit T --steps 100000000 --valid-size 20000
--valid-split spread --log-every N [--flags ...]`: every preset trains until the time limit (with
its own schedule; the ud730 presets' 7001 steps would end long before), and every run validates on
the same 20,000 characters spread through its training text, which gives the curve.  Then
`cli.py eval --checkpoint RUN --text-file HELDOUT --json --oov skip` gives the table's figure.
Prints one row per run, a table, the commands and (last) one JSON line; --plot draws validation bits/char against the run's
wall-clock seconds, one curve per preset, with the held-out figure as a point at the end
(matplotlib: benchmarks/requirements.txt).
"""
import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, find_corpus, read_corpus  # noqa: E402

sys.path.insert(0, str(ROOT))
from charlm.config import PRESETS  # noqa: E402  (no TensorFlow import)

VALIDATION = ["--valid-size", "20000", "--valid-split", "spread"]
# validations per run stay few (each costs time inside the budget): steps between them
LOG_EVERY = {"ud730": 2000, "ud730-bigram": 2000, "small": 200, "fast": 200}


def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def train_command(preset, train_file, run, seconds, seed, flags):
    return [sys.executable, str(ROOT / "cli.py"), "train", "--preset", preset, "--corpus", str(train_file),
            "--checkpoint-dir", str(run), "--time-limit", f"{seconds:g}", "--steps", "100000000",
            *VALIDATION, "--log-every", str(LOG_EVERY.get(preset, 500)), "--sample-every", "0",
            "--seed", str(seed), *flags]


def run_one(preset, train_file, heldout_file, run, seconds, seed, flags, oov=("--oov", "skip")):
    command = train_command(preset, train_file, run, seconds, seed, flags)
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode:
        sys.exit(f"{preset}: training failed:\n{proc.stderr[-2000:]}")
    trained = last_json(proc.stdout)
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "eval", "--checkpoint", str(run), "--text-file",
                           str(heldout_file), "--json", *oov], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{preset}: eval failed:\n{proc.stderr[-2000:]}")
    score = last_json(proc.stdout)
    config = json.loads((run / "config.json").read_text())
    train_cfg = config["train"]
    chars_per_step = train_cfg["batch_size"] * train_cfg["unrollings"] * (2 if config["model"]["kind"] == "bigram" else 1)
    curve = [(r["time"], r["valid_bpc"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "valid_bpc" in r]
    # the dropout the run trained with: --auto-dropout writes its choice into config.json
    return dict(preset=preset, seconds=seconds, wall=wall, steps=trained["step"], chars=trained["step"] * chars_per_step,
                dropout=config["model"]["dropout"], nats=score["nats_per_char"], bits=score["bits_per_char"],
                curve=curve, command=command)


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, row in enumerate(rows):
        colour = f"C{i}"
        times, bits = zip(*row["curve"]) if row["curve"] else ((), ())
        label = f"{row['preset']} ({row['seconds']:g} s)" if len({r['seconds'] for r in rows}) > 1 else row["preset"]
        ax.plot(times, bits, color=colour, label=label)
        ax.plot([row["wall"]], [row["bits"]], "o", color=colour)
    ax.set_xlabel("wall-clock seconds of the run (start-up included)")
    ax.set_ylabel("bits per character")
    ax.set_title(title, fontsize=10)
    lows = [r["bits"] for r in rows]
    ax.set_ylim(min(lows) - 0.1, max(lows) + 0.8)
    ax.grid(alpha=0.3)
    ax.legend(title="lines: validation while training; dots: held-out at the end", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="text8 (or its first 10M characters); see benchmarks/common.py")
    parser.add_argument("--text", help="a general text file instead: train on its first --fraction, score the rest")
    parser.add_argument("--fraction", type=float, default=0.9)
    parser.add_argument("--heldout-file", help="score on this file (text of another source) instead; "
                                               "--text then trains on the whole of its file")
    parser.add_argument("--drop-unseen", action="store_true",
                        help="remove the held-out characters the training text lacks before scoring, and "
                             "score with the model's own --oov (its byte tokens, if any, score its rare "
                             "characters): figures that compare across vocabularies")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["ud730", "ud730-bigram", "small", "fast"])
    parser.add_argument("--time-limit", nargs="+", type=float, default=[150.0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train", type=int, default=9_000_000, help="text8: training characters (from the start)")
    parser.add_argument("--heldout", type=int, default=1_000_000, help="text8: held-out characters (after --train)")
    parser.add_argument("--flags", default="", help="extra `cli.py train` flags for every run (quoted)")
    parser.add_argument("--keep", help="folder for the runs and the split (default: a temporary one)")
    parser.add_argument("--plot", help="PNG to draw the curves into")
    parser.add_argument("--json", help="write the rows (with their curves) to this file")
    args = parser.parse_args()
    if min(args.time_limit) <= 0 or not 0 < args.fraction < 1:
        parser.error("--time-limit must be positive and --fraction in (0, 1)")
    if args.text and args.heldout_file:
        train_text = Path(args.text).read_text(encoding="utf-8")
        heldout_text = Path(args.heldout_file).read_text(encoding="utf-8")
        what = (f"{Path(args.text).name} ({len(train_text):,} characters) trains, "
                f"{Path(args.heldout_file).name} ({len(heldout_text):,}) held out")
    elif args.text:
        text = Path(args.text).read_text(encoding="utf-8")
        cut = int(len(text) * args.fraction)
        train_text, heldout_text, name = text[:cut], text[cut:], Path(args.text).name
        what = f"{name}: first {cut:,} characters train, last {len(text) - cut:,} held out"
    else:
        text = read_corpus(find_corpus(args.corpus), args.train + args.heldout)
        if len(text) < args.train + args.heldout:
            parser.error(f"the corpus has {len(text):,} characters, fewer than --train + --heldout")
        train_text, heldout_text = text[:args.train], text[args.train:]
        what = f"text8: first {args.train:,} characters train, next {args.heldout:,} held out"
    oov = ("--oov", "skip")
    if args.drop_unseen:
        seen = set(train_text)
        kept = "".join(c for c in heldout_text if c in seen)
        what += f"; {len(heldout_text) - len(kept):,} held-out characters unseen in training removed"
        heldout_text, oov = kept, ()
    flags = shlex.split(args.flags)
    with tempfile.TemporaryDirectory(prefix="charlm-budget-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_file, heldout_file = work / "train.txt", work / "heldout.txt"
        train_file.write_text(train_text, encoding="utf-8")
        heldout_file.write_text(heldout_text, encoding="utf-8")
        print(what, flush=True)
        rows = []
        for seconds in args.time_limit:
            for preset in args.presets:
                run = work / f"{preset}-{seconds:g}s-seed{args.seed}"
                if run.exists():
                    sys.exit(f"{run} exists: choose another --keep folder")
                row = run_one(preset, train_file, heldout_file, run, seconds, args.seed, flags, oov)
                rows.append(row)
                print(f"{preset:>13} {seconds:>5g} s  wall {row['wall']:6.1f} s  steps {row['steps']:>7,}  "
                      f"chars {row['chars'] / 1e6:6.1f}M  dropout {row['dropout']:g}  held-out {row['nats']:.4f} nats/char  "
                      f"{row['bits']:.4f} bits/char", flush=True)
        print("\n| preset | time limit | wall | steps | characters read | dropout | held-out nats/char | bits/char |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['preset']} | {r['seconds']:g} s | {r['wall']:.0f} s | {r['steps']:,} | {r['chars'] / 1e6:.1f}M "
                  f"| {r['dropout']:g} "
                  f"| {r['nats']:.3f} | {r['bits']:.3f} |")
        print("\ncommands (TRAIN, HELDOUT: the split above):")
        for r in rows:
            print("  " + " ".join(shlex.quote(str(c)) for c in r["command"][1:]).replace(str(train_file), "TRAIN")
                  .replace(str(work), "RUNS"))
        print("  then: cli.py eval --checkpoint RUN --text-file HELDOUT --json " + " ".join(oov))
        if args.json:
            Path(args.json).write_text(json.dumps(dict(what=what, rows=rows), indent=1))
        if args.plot:
            plot(rows, args.plot, what)
        print(json.dumps({"what": what, "rows": [{k: v for k, v in r.items() if k != "command"} for r in rows]}))


if __name__ == "__main__":
    main()
