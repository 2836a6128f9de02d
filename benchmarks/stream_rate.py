#!/usr/bin/env python
"""Streamed sampling against the sampling of another checkout, interleaved in one run.

    python benchmarks/stream_rate.py --against OTHER_CHECKOUT [--repeat 3] [--length 20000]

Each repeat runs, one process each and back to back: ``peers.py sample``'s one-sequence 512-unit
rate (``Sampler.generate``, start-up and compiling excluded) in OTHER_CHECKOUT (e.g. a worktree of
main), the same in this checkout, and this checkout's ``Sampler.stream`` as ``python cli.py
sample`` uses it: its rate and its longest gap between two pieces of text.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT  # noqa: E402
from peers import SAMPLE_RATE  # noqa: E402

STREAM_RATE = SAMPLE_RATE.replace("""sampler.generate("a", 1000, seed=0)
t0 = time.perf_counter()
sampler.generate("a", {length}, seed=1)
print(json.dumps({{"chars_per_sec": {length} / (time.perf_counter() - t0)}}))
""", """sampler.generate("a", 1000, seed=0)
t0 = last = time.perf_counter()
gaps = []
for pieces in sampler.stream("a", {length}, seed=1):
    now = time.perf_counter()
    gaps.append(now - last)
    last = now
print(json.dumps({{"chars_per_sec": {length} / (time.perf_counter() - t0), "longest_gap": max(gaps),
                  "pieces": len(gaps)}}))
""")


def measure(code: str, root: Path, length: int) -> dict:
    script = code.format(root=str(root), hidden=512, embedding=64, vocab=65, length=length, threads=0)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
    if proc.returncode:
        sys.exit(f"failed in {root}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, help="another checkout of charlm (e.g. a worktree of main)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--length", type=int, default=20000)
    a = p.parse_args()
    other = Path(a.against).resolve()
    assert STREAM_RATE != SAMPLE_RATE, "peers.SAMPLE_RATE changed: update STREAM_RATE"
    rows = []
    for i in range(a.repeat):
        row = {"other": measure(SAMPLE_RATE, other, a.length)["chars_per_sec"],
               "generate": measure(SAMPLE_RATE, ROOT, a.length)["chars_per_sec"]}
        stream = measure(STREAM_RATE, ROOT, a.length)
        row.update(stream=stream["chars_per_sec"], longest_gap=stream["longest_gap"], pieces=stream["pieces"])
        rows.append(row)
        print(f"repeat {i + 1}: {other.name} generate {row['other']:,.0f} chars/s; this checkout generate "
              f"{row['generate']:,.0f}, stream {row['stream']:,.0f} chars/s in {row['pieces']} pieces "
              f"(longest gap {row['longest_gap']:.3f} s)", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("other", "generate", "stream")}
    print(f"median: stream / {other.name} generate = {med['stream'] / med['other']:.3f}, "
          f"generate / {other.name} generate = {med['generate'] / med['other']:.3f}; "
          f"longest gap {max(r['longest_gap'] for r in rows):.3f} s", flush=True)


if __name__ == "__main__":
    main()
