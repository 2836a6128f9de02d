"""Corpora larger than memory: preparation speed, training memory, start-up, and chars/s on a memory map.

    python benchmarks/corpora.py build --source text8-first10M.txt.gz --times 2000 --output /tmp/big.txt
    python benchmarks/corpora.py prepare /tmp/big.txt          # MB/s of text, both passes; peak RSS
    python benchmarks/corpora.py train /tmp/big.txt --preset small --steps 3
    python benchmarks/corpora.py speed text8-first10M.txt --repeat 3

``prepare`` runs ``cli.py prepare`` and ``train`` runs ``charlm.train`` in a fresh process under
``/usr/bin/time -v`` (peak RSS of the whole process).  ``train`` also prints the seconds from the
end of TensorFlow's import to the end of the first training step (``--log-every 1``).  ``speed``
trains the same run on the prepared (memory-mapped) corpus and on its text read into memory,
interleaved, and prints the chars/s of each (the log windows after the first, which holds the
compile).  Every step is a fresh process, so no page cache of Python objects carries over.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(stderr: str) -> float:
    """GB, from /usr/bin/time -v."""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(found.group(1)) / 1e6 if found else float("nan")


def run(cmd, env=None):
    timed = ["/usr/bin/time", "-v", *cmd] if Path("/usr/bin/time").exists() else list(cmd)
    proc = subprocess.run(timed, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return proc


def build(args):
    """The source text (plain or .gz) written ``--times`` times into ``--output``."""
    opener = gzip.open if str(args.source).endswith(".gz") else open
    with opener(args.source, "rb") as f:
        text = f.read()
    began = time.perf_counter()
    with open(args.output, "wb") as out:
        for _ in range(args.times):
            out.write(text)
    size = len(text) * args.times
    print(json.dumps({"output": str(args.output), "bytes": size, "seconds": round(time.perf_counter() - began, 1)}))


def prepare(args):
    began = time.perf_counter()
    proc = run([sys.executable, str(ROOT / "cli.py"), "prepare", *args.corpus])
    seconds = time.perf_counter() - began
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary.update(process_seconds=round(seconds, 1), peak_rss_gb=round(peak_rss(proc.stderr), 3))
    print(json.dumps(summary))


TRAIN = """
import json, sys, time
from charlm.runtime import import_tensorflow_quietly
import_tensorflow_quietly()
imported = time.perf_counter()
from charlm.training.trainer import train
marks = []
def log(line):
    marks.append((time.perf_counter() - imported, line))
    print(line, file=sys.stderr)
options = json.loads(sys.argv[1])
text = None
if options.pop("in_memory", False):
    from charlm.data.corpora import load_corpus
    text = load_corpus(options["corpus"])
result = train(text=text, log=log, **options)
first = next(t for t, line in marks if line.startswith("step "))
print(json.dumps({"first_step_after_tf_import": round(first, 2), "step": result.step,
                  "chars_per_sec": [r["chars_per_sec"] for r in result.history]}))
"""


def train_once(corpus, options, in_memory=False):
    run_dir = tempfile.mkdtemp(prefix="charlm-corpora-bench-")
    shutil.rmtree(run_dir)
    try:
        config = {"corpus": str(corpus), "checkpoint_dir": run_dir, "in_memory": in_memory, **options}
        proc = run([sys.executable, "-c", TRAIN, json.dumps(config)], env={"PYTHONPATH": str(ROOT)})
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["peak_rss_gb"] = round(peak_rss(proc.stderr), 3)
        out["log"] = [line for line in proc.stderr.splitlines() if line.startswith(("prepared", "corpus:", "training"))]
        return out
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def train(args):
    options = {"preset": args.preset, "steps": args.steps, "log_every": 1, "sample_every": 0,
               "checkpoint_every": 0}
    print(json.dumps(train_once(args.corpus, options)))


def speed(args):
    options = {"preset": args.preset, "steps": args.steps, "log_every": args.log_every, "sample_every": 0,
               "checkpoint_every": 0}
    train_once(args.corpus, {**options, "steps": 1})          # prepared beforehand, not timed
    got = {"memmap": [], "in-memory": []}
    for _ in range(args.repeat):
        for name in got:
            out = train_once(args.corpus, options, in_memory=name == "in-memory")
            got[name].append(statistics.mean(out["chars_per_sec"][1:]))
            print(name, round(got[name][-1]), file=sys.stderr)
    mm, mem = statistics.median(got["memmap"]), statistics.median(got["in-memory"])
    print(json.dumps({"memmap_chars_per_sec": [round(x) for x in got["memmap"]],
                      "in_memory_chars_per_sec": [round(x) for x in got["in-memory"]],
                      "median_ratio": round(mm / mem, 4)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("build")
    p.add_argument("--source", required=True)
    p.add_argument("--times", type=int, required=True)
    p.add_argument("--output", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("corpus", nargs="+")
    p = sub.add_parser("train")
    p.add_argument("corpus")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=3)
    p = sub.add_parser("speed")
    p.add_argument("corpus")
    p.add_argument("--preset", default="ud730")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    {"build": build, "prepare": prepare, "train": train, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
