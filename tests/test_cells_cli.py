"""--cell gru and --cell rnn end to end: train, sample, eval, export, --resume and two mirrored
replicas (real training on tiny models), and LSTM runs saved before --cell existed."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main
from conftest import ROOT, make_text

pytestmark = pytest.mark.slow     # whole training processes and scripts

TINY = ["--hidden", "24", "--batch-size", "8", "--unrollings", "12", "--optimizer", "adam",
        "--learning-rate", "0.01", "--seed", "2", "--log-every", "20", "--sample-every", "0",
        "--valid-size", "300"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def last_json(output):
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cells")
    (d / "train.txt").write_text(make_text(30000, seed=1, sentences=True))
    (d / "heldout.txt").write_text(make_text(2000, seed=2, sentences=True))
    return d


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_cell_run_trains_samples_evaluates_exports_and_resumes(cell, texts, tmp_path):
    import tensorflow as tf
    from charlm.use.scoring import evaluate

    run = tmp_path / cell
    r = invoke("train", "--corpus", texts / "train.txt", "--checkpoint-dir", run, "--cell", cell,
               "--layers", "2", "--embedding-size", "8", "--dropout", "0.1", "--steps", "40", *TINY)
    assert r.exit_code == 0, r.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["cell"] == cell
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]

    s = invoke("sample", "--checkpoint", run, "--prime", "The", "--length", 60, "--seed", 3)
    assert s.exit_code == 0 and len(s.stdout[:-1]) == 63 and s.stdout.startswith("The")
    assert invoke("sample", "--checkpoint", run, "--prime", "The", "--length", 60, "--seed", 3).stdout == s.stdout

    e = invoke("eval", "--checkpoint", run, "--text-file", texts / "heldout.txt", "--json")
    assert e.exit_code == 0, e.output
    bits = last_json(e.stdout)["bits_per_char"]
    assert 0 < bits < 4.3          # below log2(27) = 4.75: it learned something

    out = tmp_path / "saved"
    assert invoke("export", "--checkpoint", run, "--output", out).exit_code == 0
    held = (texts / "heldout.txt").read_text()[:400]
    loaded = tf.saved_model.load(str(out))
    text = loaded.generate(prime=tf.constant("ab"), length=tf.constant(30), temperature=tf.constant(1.0))
    assert len(text.numpy().decode()) == 32
    assert float(loaded.score(text=tf.constant(held))) == pytest.approx(evaluate(run, text=held)[0].nats_per_char,
                                                                        rel=1e-4)

    refused = invoke("train", "--checkpoint-dir", run, "--resume", "--cell", "lstm", "--steps", "60")
    assert refused.exit_code == 1 and f"cell '{cell}' -> 'lstm'" in refused.output
    again = invoke("train", "--checkpoint-dir", run, "--resume", "--cell", cell, "--steps", "60")
    assert again.exit_code == 0, again.output
    assert last_json(again.stdout)["step"] == 60


def test_unknown_cell_is_a_usage_error(texts, tmp_path):
    r = CliRunner().invoke(main, ["train", "--corpus", str(texts / "train.txt"), "--checkpoint-dir",
                                  str(tmp_path / "x"), "--cell", "lstmx"])
    assert r.exit_code == 2 and "lstmx" in r.output
    from charlm.config import build_configs
    from charlm.errors import CharlmError
    with pytest.raises(CharlmError, match="--cell must be one of lstm, gru, rnn"):
        build_configs("ud730", cell="elman")


def test_lstm_runs_saved_without_the_cell_key_load_as_lstm(texts, tmp_path):
    run = tmp_path / "old"
    # (a 25-step window: no XLA compile of the training block; this test is about the config)
    assert invoke("train", "--corpus", texts / "train.txt", "--checkpoint-dir", run, "--steps", "20",
                  *TINY, "--unrollings", "25").exit_code == 0
    before = last_json(invoke("eval", "--checkpoint", run, "--text-file", texts / "heldout.txt", "--json").stdout)
    config = json.loads((run / "config.json").read_text())
    assert config["model"].pop("cell") == "lstm"
    (run / "config.json").write_text(json.dumps(config))
    after = last_json(invoke("eval", "--checkpoint", run, "--text-file", texts / "heldout.txt", "--json").stdout)
    assert after == before
    resumed = invoke("train", "--checkpoint-dir", run, "--resume", "--steps", "30")
    assert resumed.exit_code == 0 and last_json(resumed.stdout)["step"] == 30


def cli(*args):
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=180, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return last_json(proc.stdout), proc.stderr


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_two_mirrored_replicas_follow_one_device(cell, texts, tmp_path):
    """Each replica carries its rows of the (h, c) state; the summed gradient is the global one."""
    args = ["train", "--corpus", texts / "train.txt", "--cell", cell, "--steps", "30", *TINY]
    r = invoke(*args, "--checkpoint-dir", tmp_path / "one")
    assert r.exit_code == 0, r.output
    one = last_json(r.stdout)
    two, log = cli(*args, "--checkpoint-dir", tmp_path / "two", "--distribute", "mirrored", "--replicas", "2")
    assert "mirrored over 2 replicas" in log and two["step"] == 30
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-4)
