#!/usr/bin/env python
"""Quality of a preset (default ud730) over many seeds, for one or more initialisations.

    python benchmarks/quality.py --seeds 1-20 --init orthogonal notebook --jobs 2
    python benchmarks/quality.py --preset ud730-bigram --seeds 1-10

For each initialisation and seed, one process trains as `cli.py train --preset P --init I --seed S`
does (for ud730, the validation perplexity on the first 1000 characters after 7001 steps: the
issue's figure), then scores the checkpoint as `cli.py eval` does, on the corpus's last --heldout characters (1M by default: a thousand times
more text than the validation split, so far less noise between seeds).  Prints one line per run,
then each initialisation's means and, paired by seed, its difference from the first one given.

The ud730 preset trains on everything after the first 1000 characters, so the held-out slice is
not unseen: each of the 64 cursors reads 70,010 characters (7001 steps x 10) of its 1/64 of the
text once.  It is the same for every initialisation, so the paired comparison stays fair.
The corpus: --corpus, $CHARLM_BENCH_CORPUS, or ../shared/data/text8-first10M.txt.gz.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, find_corpus, read_corpus  # noqa: E402

sys.path.insert(0, str(ROOT))
from charlm.config import INITS, PRESETS  # noqa: E402  (no TensorFlow import)


def seed_list(text: str) -> list[int]:
    """"1-5,9" -> [1, 2, 3, 4, 5, 9]."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def last_json(cmd) -> dict:
    proc = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, cwd=ROOT)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def one_run(corpus, heldout, workdir, preset, steps, init, seed, in_processes=True):
    run_dir = Path(workdir) / f"{init}-{seed}"
    job = {"corpus": str(Path(corpus).resolve()), "heldout": str(heldout), "run_dir": str(run_dir), "preset": preset,
           "steps": steps, "init": init, "seed": seed}
    result = last_json([__file__, "--train-and-score", json.dumps(job)]) if in_processes else train_and_score(job)
    row = {"init": init, "seed": seed, "valid": result["valid_perplexity"], "heldout": result["perplexity"]}
    print(f"{init:<12} seed {seed:>3}  valid ppl {row['valid']:.4f}  held-out ppl {row['heldout']:.4f}",
          flush=True)
    return row


def train_and_score(job: dict) -> dict:
    """One run in this process (one TensorFlow start-up for both): ``charlm.train`` with the
    preset's settings, then ``charlm.evaluate`` of its checkpoint."""
    import charlm
    from charlm.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    steps = {"steps": job["steps"]} if job["steps"] else {}
    trained = charlm.train(job["corpus"], job["run_dir"], preset=job["preset"], init=job["init"],
                           seed=job["seed"], sample_every=0, log=lambda *a: None, **steps)
    score, _ = charlm.evaluate(job["run_dir"], text_file=job["heldout"])
    return {"valid_perplexity": trained.valid_perplexity, "perplexity": score.perplexity}


def summarise(rows, inits):
    by = {init: {r["seed"]: r for r in rows if r["init"] == init} for init in inits}
    print()
    for init in inits:
        valid = [r["valid"] for r in by[init].values()]
        held = [r["heldout"] for r in by[init].values()]
        spread = f" (sd {statistics.stdev(valid):.4f})" if len(valid) > 1 else ""
        print(f"{init:<12} {len(valid)} seeds: valid mean {statistics.mean(valid):.4f}{spread}, "
              f"held-out mean {statistics.mean(held):.4f}")
    base = inits[0]
    for init in inits[1:]:
        seeds = sorted(set(by[base]) & set(by[init]))
        dv = [by[base][s]["valid"] - by[init][s]["valid"] for s in seeds]
        dh = [by[base][s]["heldout"] - by[init][s]["heldout"] for s in seeds]
        se = (f" (standard error {statistics.stdev(dh) / len(dh) ** 0.5:.4f})" if len(dh) > 1 else "")
        print(f"{base} minus {init}, paired over {len(seeds)} seeds: valid {statistics.mean(dv):+.4f}, "
              f"held-out {statistics.mean(dh):+.4f}{se}; {base} lower on held-out text in "
              f"{sum(d < 0 for d in dh)} of {len(dh)}")


def main():
    if sys.argv[1:2] == ["--train-and-score"]:      # one run, in a process of its own (one_run)
        return print(json.dumps(train_and_score(json.loads(sys.argv[2]))))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus")
    p.add_argument("--seeds", type=seed_list, default="1-5", help="e.g. 1-20 or 1,3,5 (default 1-5)")
    p.add_argument("--init", nargs="+", default=["orthogonal", "notebook"],
                   choices=INITS)
    p.add_argument("--preset", default="ud730", choices=list(PRESETS))
    p.add_argument("--steps", type=int, default=None, help="default: the preset's (ud730: 7001)")
    p.add_argument("--heldout", type=int, default=1_000_000, help="last characters scored (default 1M)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, each in a process of its own (the ud730 "
                   "model uses one thread); 1: one after another in this process")
    a = p.parse_args()
    if a.heldout < 1 or (a.steps is not None and a.steps < 1):
        p.error("--heldout and --steps must be positive")
    corpus = find_corpus(a.corpus)
    text = read_corpus(corpus)
    if len(text) < 2 * a.heldout:
        sys.exit(f"the corpus has {len(text):,} characters; --heldout {a.heldout:,} needs at least twice that")
    print(f"preset {a.preset}; corpus {corpus}; held-out: its last {a.heldout:,} characters", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        heldout = Path(workdir) / "heldout.txt"
        heldout.write_text(text[-a.heldout:])
        del text
        jobs = [(init, seed) for seed in a.seeds for init in a.init]
        if a.jobs <= 1:
            rows = [one_run(corpus, heldout, workdir, a.preset, a.steps, *job, in_processes=False) for job in jobs]
        else:
            with ThreadPoolExecutor(max_workers=a.jobs) as pool:
                rows = list(pool.map(lambda job: one_run(corpus, heldout, workdir, a.preset, a.steps, *job), jobs))
    summarise(rows, a.init)


if __name__ == "__main__":
    main()
