#!/usr/bin/env python
"""Dynamic evaluation against static: nats/char and whole-process seconds, in one invocation.

    python benchmarks/dynamic.py --checkpoint RUN --text-file HELDOUT
    python benchmarks/dynamic.py --checkpoint RUN --tune --lr 0.001 0.002 0.004 --decay 0 0.001

The first form runs `cli.py eval --checkpoint RUN --text-file HELDOUT --json` (static) and then
`cli.py eval ... --dynamic --json` with the defaults, and prints both figures, the gain and the
ratio of the two processes' seconds.  --tune scores the run's own validation split (`--split
valid`, text the run never trained on and not the held-out text) for every --lr x --decay x
--segment, which is how the defaults were chosen.  One JSON line at the end.
"""
import argparse
import itertools
import json
import subprocess
import sys
import time

from common import ROOT


def run_eval(args) -> tuple[dict, float]:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "eval", *map(str, args), "--json"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode:
        sys.exit(f"failed: eval {' '.join(map(str, args))}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--text-file", help="held-out text to score (not with --tune)")
    p.add_argument("--tune", action="store_true", help="score the run's validation split for each setting")
    p.add_argument("--lr", nargs="+", type=float, default=[None])
    p.add_argument("--decay", nargs="+", type=float, default=[None])
    p.add_argument("--segment", nargs="+", type=int, default=[None])
    p.add_argument("--streams", type=int, default=None)
    a = p.parse_args()
    target = ["--split", "valid"] if a.tune else ["--text-file", a.text_file]
    if not a.tune and not a.text_file:
        p.error("give --text-file, or --tune")
    base = ["--checkpoint", a.checkpoint, *target] + (["--streams", a.streams] if a.streams else [])
    static, static_seconds = run_eval(base)
    print(f"static   {static['nats_per_char']:.4f} nats/char  {static_seconds:6.1f} s (whole process)", flush=True)
    rows = []
    for lr, decay, segment in itertools.product(a.lr, a.decay, a.segment):
        flags = [*(["--dynamic-lr", lr] if lr is not None else []), *(["--dynamic-decay", decay] if decay is not None else []),
                 *(["--dynamic-segment", segment] if segment is not None else [])]
        figures, seconds = run_eval([*base, "--dynamic", *flags])
        d = figures["dynamic"]
        row = dict(lr=d["learning_rate"], decay=d["decay"], segment=d["segment"], streams=d["streams"],
                   nats=figures["nats_per_char"], static=figures["static_nats_per_char"],
                   gain=figures["gain_nats_per_char"], seconds=seconds, static_seconds=static_seconds,
                   ratio=seconds / static_seconds, inner=d["seconds"], inner_static=d["static_seconds"])
        rows.append(row)
        print(f"dynamic  {row['nats']:.4f} nats/char  {seconds:6.1f} s (x{row['ratio']:.1f})  gain {row['gain']:+.4f}  "
              f"lr {row['lr']:g} decay {row['decay']:g} segment {row['segment']} streams {row['streams']}  "
              f"(in-process: dynamic with its statistics pass {row['inner']:.1f} s, static {row['inner_static']:.1f} s)",
              flush=True)
    print(json.dumps({"checkpoint": a.checkpoint, "scored": target[-1], "static": static["nats_per_char"],
                      "static_seconds": static_seconds, "rows": rows}))


if __name__ == "__main__":
    main()
