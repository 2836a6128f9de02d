"""The benchmark peers: the notebook's tf.compat.v1 graph as an independent reference for whole
training steps, its ids feed against its one-hot feed, peers.py running only the peers in
benchmarks/peers/, and the scripts' handling of a missing corpus.

The peer scripts switch TensorFlow to v1 behaviour, so they run in a subprocess.
"""
import ast
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charlm.config import build_configs
from charlm.training.trainer import Trainer

pytestmark = pytest.mark.slow     # whole training processes and scripts

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"


def text8_like(chars: int, seed: int = 0) -> str:
    """Random words over a-z (every letter present) separated by single spaces, like text8."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words, size = [], 0
    while size < chars:
        word = "".join(rng.choice(letters, size=rng.integers(1, 9)))
        words.append(word)
        size += len(word) + 1
    text = "abcdefghijklmnopqrstuvwxyz " + " ".join(words)
    return text[:chars]


def run_script(script, *args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def peer_train(corpus, steps, *flags):
    proc = run_script("peers/notebook_peer.py", "train", "--corpus", corpus, "--steps", steps, "--valid-every", 0,
                      "--sample-every", 0, "--init-from-charlm", 1, *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_last_loss(corpus, steps, *flags):
    return peer_train(corpus, steps, "--no-final-valid", *flags)["final_loss"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "text8-like.txt"
    path.write_text(text8_like(60_000))
    return path


@pytest.fixture(scope="module")
def exact_loss(corpus):
    """The notebook graph's loss after 20 exact-gradient steps from charlm's seed-1 start, one-hot fed."""
    return peer_last_loss(corpus, 20, "--resource-variables")


@pytest.mark.parametrize("xla", ["auto", "off"])
def test_charlm_trains_step_for_step_like_the_notebook_graph(corpus, exact_loss, tmp_path, monkeypatch, xla):
    """From the same weights, 20 SGD steps of charlm's single-matmul block (compiled with XLA, as
    ud730 trains by default, and on TensorFlow's kernels) and of the notebook's four-matmul graph
    (exact gradients) end on the same loss."""
    monkeypatch.setenv("CHARLM_XLA", xla)
    steps = 20
    model_cfg, train_cfg = build_configs("ud730", seed=1, steps=steps, sample_every=0)
    trainer = Trainer(model_cfg, train_cfg, corpus.read_text(), tmp_path / "run", log=lambda *a: None)
    assert trainer.xla == (xla == "auto")
    ours = trainer.run()
    assert ours.step == steps
    exact = exact_loss
    # float32 round-off only: the notebook's own stale-read gradient is ~5e-5 away by now
    assert abs(ours.last_loss - exact) < 1e-5, (ours.last_loss, exact)
    # the model learned something (the first loss is ~log 27), so real updates were compared
    assert ours.last_loss < math.log(27) - 0.1


def test_notebook_reference_variables_give_a_different_gradient(corpus, exact_loss):
    """The notebook's own (reference-variable) graph reads the carried state after overwriting it
    in its backward pass; its losses part from the exact ones after the first update."""
    notebook = peer_last_loss(corpus, 20)
    assert abs(notebook - exact_loss) > 1e-5, (notebook, exact_loss)


def test_the_graph_fed_ids_trains_as_the_graph_fed_one_hot_rows(corpus, exact_loss):
    """--feed ids (the strongest form, which peers.py races) is the same arithmetic: from the same
    start it ends 20 steps on the one-hot feed's loss, and its per-character loop validates."""
    ids = peer_train(corpus, 20, "--resource-variables", "--feed", "ids")
    assert ids["feed"] == "ids"
    assert abs(ids["final_loss"] - exact_loss) < 1e-6, (ids["final_loss"], exact_loss)
    assert 3.0 < ids["valid_perplexity"] < 27.0, ids


def test_peers_script_runs_only_the_peers_in_the_repository():
    """benchmarks/peers.py names no script outside the repository, and every peer it (or any
    benchmark) runs is a file in benchmarks/peers/.  Read as text: torch is not imported here."""
    source = (ROOT / "benchmarks" / "peers.py").read_text()
    assert "shared/peers" not in source and '"shared" / "peers"' not in source
    tree = ast.parse(source)
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PEERS")
    assert ast.unparse(assign.value) == "HERE / 'peers'"
    used = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", None) == "peer"}
    assert {"torch_lstm.py", "torch_sample.py", "notebook_peer.py"} <= used
    for name in used:
        assert (PEERS / name).is_file(), name
    for script in (ROOT / "benchmarks").glob("*.py"):
        for name in set(re.findall(r"(\w+_peer\.py)", script.read_text())):
            assert (PEERS / name).is_file(), (script.name, name)
    for script in PEERS.glob("*.py"):             # they all at least compile
        compile(script.read_text(), str(script), "exec")


@pytest.mark.parametrize("script", ["peers/notebook_peer.py", "peers/keras_peer.py", "compare.py", "quality.py"])
def test_benchmarks_say_how_to_get_a_missing_corpus(script, tmp_path):
    env = dict(os.environ, CHARLM_BENCH_CORPUS=str(tmp_path / "absent.txt.gz"))
    args = ["train"] if script in ("peers/notebook_peer.py", "compare.py") else []
    proc = run_script(script, *args, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "absent.txt.gz" in lines[0] and "text8.zip" in lines[0], proc.stderr


def test_quality_script_trains_scores_and_pairs_each_seed(corpus, tmp_path):
    """Two inits x two seeds of a short ud730 run: per-run validation and held-out perplexities,
    means per init and the paired difference, all from real training and scoring."""
    proc = run_script("quality.py", "--corpus", corpus, "--seeds", "1-2", "--init", "orthogonal", "notebook",
                      "--steps", 30, "--heldout", 20_000, "--jobs", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [l for l in proc.stdout.splitlines() if "held-out ppl" in l]
    assert len(runs) == 4
    values = [float(l.split()[-1]) for l in runs]
    # 30 steps learn something of 27 symbols, but are far from good
    assert all(3.0 < v < 27.0 for v in values), values
    assert len(set(values)) == 4          # different seeds and inits, different models
    assert "orthogonal minus notebook, paired over 2 seeds" in proc.stdout
    # --jobs 2 (the default) runs each in a process of its own, which gives the same figures
    heldout = tmp_path / "heldout.txt"
    heldout.write_text(corpus.read_text()[-20_000:])
    job = {"corpus": str(corpus), "heldout": str(heldout), "run_dir": str(tmp_path / "run"), "preset": "ud730",
           "steps": 30, "init": "notebook", "seed": 2}
    alone = run_script("quality.py", "--train-and-score", json.dumps(job))
    assert alone.returncode == 0, alone.stderr[-2000:]
    figures = json.loads(alone.stdout.strip().splitlines()[-1])
    line = next(l for l in runs if l.startswith("notebook") and " seed   2 " in l)
    assert f"valid ppl {figures['valid_perplexity']:.4f}" in line and line.endswith(f"{figures['perplexity']:.4f}")
