"""Bad input, exact resume, interruption, numerical faults: as a user meets them on the command line."""
import bz2
import gzip
import json
import lzma
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, make_text, run_cli as cli

CLI = [sys.executable, str(ROOT / "cli.py")]     # the commands whose test is about the process
TINY = ["--hidden", "16", "--batch-size", "8", "--unrollings", "8", "--optimizer", "adam",
        "--learning-rate", "0.01", "--log-every", "25", "--sample-every", "0", "--valid-size", "200",
        "--checkpoint-every", "50"]


def cli_process(*args, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_clean_error(proc, *words):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:"), proc.stderr
    for w in words:
        assert w in last, (w, last)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(make_text(30000, seed=5, sentences=True))
    return path


def final_weights(run_dir):
    from charlm.run.checkpoint import load_model

    model, _, _ = load_model(run_dir)
    return [v.numpy() for v in model.trainable_variables]


@pytest.mark.slow
def test_resume_is_exact(corpus, tmp_path):
    """--steps 100 then --resume --steps 200 equals --steps 200 straight (dropout and Adam included;
    --keep-best, on in the resumed run only, changes nothing of it)."""
    common = ["--corpus", corpus, "--model", "bigram", "--embedding-size", "8", "--dropout", "0.2",
              "--seed", "3", *TINY]
    assert cli("train", *common, "--steps", 100, "--checkpoint-dir", tmp_path / "a", "--keep-best").returncode == 0
    resumed = cli("train", "--resume", "--steps", 200, "--checkpoint-dir", tmp_path / "a")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr
    assert cli("train", *common, "--steps", 200, "--checkpoint-dir", tmp_path / "b").returncode == 0
    for a, b in zip(final_weights(tmp_path / "a"), final_weights(tmp_path / "b")):
        np.testing.assert_allclose(a, b, atol=1e-5)
    from charlm import evaluate        # in this process: two more CLI processes would add ~15 s

    text = corpus.read_text()
    scores = [evaluate(tmp_path / run, text=text)[0].nats_per_char for run in ("a", "b")]
    assert abs(scores[0] - scores[1]) < 1e-4
    valid = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    best = json.loads((tmp_path / "a" / "best" / "best.json").read_text())
    assert best["step"] == min(valid, key=lambda m: m["valid_perplexity"])["step"]


@pytest.mark.slow
def test_the_xla_block_resumes_exactly(corpus, tmp_path, monkeypatch):
    """The XLA-compiled training block (what small models train with; the suite otherwise trains on
    TensorFlow's kernels): 20 steps on the kernels, resumed under XLA to 40, end where 40 steps
    straight on the kernels do, Adam included.  (Without dropout: the two draw their dropout
    masks differently.  That the kernels resume exactly with dropout: test_resume_is_exact.)"""
    common = ["--corpus", corpus, "--embedding-size", "8", "--seed", "5", *TINY,
              "--checkpoint-every", "20", "--log-every", "20"]
    monkeypatch.setenv("CHARLM_XLA", "off")
    assert cli("train", *common, "--steps", 40, "--checkpoint-dir", tmp_path / "straight").returncode == 0
    assert cli("train", *common, "--steps", 20, "--checkpoint-dir", tmp_path / "resumed").returncode == 0
    halfway = final_weights(tmp_path / "resumed")
    monkeypatch.setenv("CHARLM_XLA", "auto")
    from charlm.training import trainer

    compiled = []
    monkeypatch.setattr(trainer.Trainer, "_compile", lambda self, f=trainer.Trainer._compile: (
        compiled.append(self.xla), f(self))[1])
    resumed = cli("train", "--resume", "--steps", 40, "--checkpoint-dir", tmp_path / "resumed")
    assert resumed.returncode == 0 and "resumed" in resumed.stderr, resumed.stderr
    assert compiled == [True]
    again, straight = final_weights(tmp_path / "resumed"), final_weights(tmp_path / "straight")
    for a, b in zip(again, straight):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the last 20 steps moved the weights: the comparison is of real updates
    assert max(np.abs(a - h).max() for a, h in zip(straight, halfway)) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_and_resumes(corpus, tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", "--corpus", str(corpus), "--checkpoint-dir", str(run),
                             "--steps", "1000000", *TINY], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped"] == "interrupted" and summary["step"] > 0
    again = cli("train", "--resume", "--checkpoint-dir", run, "--steps", summary["step"] + 10)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["step"] == summary["step"] + 10


def test_non_finite_loss_stops_and_keeps_last_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    # (a 25-token window: no XLA compile of the training block, which this test is not about)
    proc = cli("train", "--corpus", corpus, "--checkpoint-dir", run, "--steps", 200, *TINY[:6], "--unrollings", 25,
               "--optimizer", "sgd", "--learning-rate", "1e38", "--clip", "0", "--sample-every", "0",
               "--checkpoint-every", "1", "--log-every", "1", "--init", "uniform")
    assert_clean_error(proc, "non-finite")
    from charlm.run.checkpoint import load_model

    model, _, info = load_model(run)            # the last good checkpoint still loads
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def test_diverging_run_with_huge_perplexities_reports_them(corpus, tmp_path):
    """Adam at rate 10 blows the loss up to finite but huge values: perplexity overflows to inf."""
    run = tmp_path / "run"
    # a process of its own: a warning (Python's or TensorFlow's log) reaches its stderr
    proc = cli_process("train", "--corpus", corpus, "--checkpoint-dir", run, "--steps", 100, *TINY[:6],
                       "--optimizer", "adam", "--learning-rate", "10", "--log-every", "50", "--sample-every", "0")
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-2000:]
    if proc.returncode == 0:       # finished: every record was logged, infinite perplexity included
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [50, 100]
    else:                          # or the loss itself went non-finite: one clear line
        assert proc.stderr.strip().splitlines()[-1].startswith("Error:")


@pytest.mark.slow
def test_corrupt_and_missing_checkpoints(corpus, tmp_path):
    run = tmp_path / "run"
    # (a 25-token window: no XLA compile of the training block, which this test is not about)
    assert cli("train", "--corpus", corpus, "--checkpoint-dir", run, "--steps", 20, *TINY,
               "--unrollings", 25).returncode == 0
    for data in (run / "ckpt").glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:100])          # truncated weights
    assert_clean_error(cli("sample", "--checkpoint", run, "--length", 10), "corrupt")
    assert_clean_error(cli("eval", "--checkpoint", run, "--text-file", corpus), "corrupt")
    (run / "config.json").write_text("{not json")
    assert_clean_error(cli("sample", "--checkpoint", run), "corrupt")
    assert_clean_error(cli("eval", "--checkpoint", tmp_path / "nothing-here"), "not found")


@pytest.mark.slow
def test_bad_inputs_each_one_clear_line(corpus, tmp_path):
    (tmp_path / "short.txt").write_text("tiny text")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "afile").write_text("x")
    assert_clean_error(cli("train", "--corpus", tmp_path / "short.txt", "--valid-size", 0,
                           "--checkpoint-dir", tmp_path / "r1"), "fewer than one batch")
    assert_clean_error(cli("train", "--corpus", tmp_path / "latin1.txt", "--checkpoint-dir", tmp_path / "r2"),
                       "not valid UTF-8 at byte 3")
    assert_clean_error(cli("train", "--corpus", corpus, "--checkpoint-dir", tmp_path / "afile"), "is a file")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    for args in (["train", "--batch-size", "0"], ["train", "--dropout", "-0.1"], ["train", "--hidden", "-3"],
                 ["sample", "--temperature", "-1"], ["sample", "--length", "-5"], ["sample", "--num-samples", "0"]):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, args


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=300).filter(lambda t: not t.startswith("\ufeff")),
       st.sampled_from(["txt", "gz", "bz2", "xz", "zip"]))
def test_corpus_readers_round_trip_any_text(tmp_path_factory, text, fmt):
    from charlm.data.corpora import read_text_file

    path = tmp_path_factory.mktemp("rt") / f"c.{fmt}"
    data = text.encode("utf-8", "surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return                      # lone surrogates cannot be stored as UTF-8 text
    writers = {"txt": lambda: path.write_bytes(data), "gz": lambda: path.write_bytes(gzip.compress(data)),
               "bz2": lambda: path.write_bytes(bz2.compress(data)), "xz": lambda: path.write_bytes(lzma.compress(data)),
               "zip": lambda: zipfile.ZipFile(path, "w").writestr("m.txt", data)}
    writers[fmt]()
    assert read_text_file(path) == text


def test_stop_signals_records_and_restores_the_handlers():
    """charlm.run.signals: the one helper both trainers use for SIGINT/SIGTERM."""
    import os
    import threading

    from charlm.run.signals import StopSignals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGINT)          # no KeyboardInterrupt: it is only noted
        time.sleep(0.01)
        assert stop.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.received == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before
    outside = []                                      # outside the main thread: signals left alone

    def worker():
        with StopSignals() as s:
            outside.append((s.received, signal.getsignal(signal.SIGINT)))
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert outside == [(None, before[signal.SIGINT])]


def test_a_new_run_that_wrote_nothing_leaves_nothing(tmp_path):
    """charlm.run.folder.writing: a new folder is removed, a lock file it added to an empty one too."""
    from charlm.errors import CharlmError
    from charlm.run import folder

    new = tmp_path / "new"
    with pytest.raises(CharlmError, match="no words"):
        with folder.writing(new, new=True):
            assert (new / "train.lock").exists()
            raise CharlmError("no words")
    assert not new.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with folder.writing(empty, new=True):
        pass
    assert empty.is_dir() and list(empty.iterdir()) == []
    (empty / "notes.txt").write_text("mine")
    with pytest.raises(CharlmError, match="already holds other files"):
        folder.check_new_folder(empty)
    assert (empty / "notes.txt").read_text() == "mine"
