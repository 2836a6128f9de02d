"""The commands a user runs, end to end: train, sample, eval (real training, real checkpoints)."""
import json
import re
import math
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main
from conftest import ROOT, make_text, run_cli

SMALL = ["--hidden", "48", "--batch-size", "16", "--unrollings", "16", "--steps", "150",
         "--optimizer", "adam", "--learning-rate", "0.01", "--seed", "1", "--log-every", "50",
         "--sample-every", "0", "--valid-size", "500"]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    (d / "train.txt").write_text(make_text(80000, seed=1, sentences=True))
    (d / "heldout.txt").write_text(make_text(5000, seed=2, sentences=True))
    return d


@pytest.fixture(scope="module")
def char_run(texts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "char"
    r = invoke("train", "--corpus", texts / "train.txt", "--checkpoint-dir", run, "--model", "char", *SMALL)
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture(scope="module")
def bigram_run(texts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "bigram"
    r = invoke("train", "--corpus", texts / "train.txt", "--checkpoint-dir", run, "--model", "bigram",
               "--dropout", "0.1", "--embedding-size", "16", *SMALL)
    assert r.exit_code == 0, r.output
    return run


def test_train_writes_a_complete_run(char_run):
    assert (char_run / "config.json").exists()
    assert (char_run / "ckpt" / "checkpoint").exists()
    config = json.loads((char_run / "config.json").read_text())
    assert config["model"]["hidden"] == 48 and config["train"]["optimizer"] == "adam"
    metrics = [json.loads(line) for line in (char_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [50, 100, 150]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert all(m["valid_perplexity"] > 1 for m in metrics)
    assert list((char_run / "logs").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("run", ["char_run", "bigram_run"])
@pytest.mark.parametrize("prime,length", [("ROMEO:", 300), ("The", 301), ("", 7), ("a", 0)])
def test_sample_is_prime_plus_exact_length_and_seeded(run, prime, length, request):
    run = request.getfixturevalue(run)
    args = ["sample", "--checkpoint", run, "--length", length, "--seed", 7]
    if prime:
        args += ["--prime", prime]
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    text = first.stdout[:-1]            # one trailing newline
    assert text.startswith(prime) and len(text) == len(prime) + length
    assert first.stdout == second.stdout
    other = invoke(*args[:-1], 8)
    if length > 20:
        assert other.stdout != first.stdout


def test_sample_options(char_run):
    r = invoke("sample", "--checkpoint", char_run, "--length", 50, "--num-samples", 3, "--seed", 1,
               "--temperature", 0.5, "--top-k", 3)
    assert r.exit_code == 0
    samples = r.stdout.split("\n\n")
    assert len(samples) == 3 and all(len(s.strip("\n")) == 50 for s in samples)
    greedy = invoke("sample", "--checkpoint", char_run, "--length", 40, "--temperature", 0, "--prime", "the")
    again = invoke("sample", "--checkpoint", char_run, "--length", 40, "--temperature", 0, "--prime", "the")
    assert greedy.stdout == again.stdout      # greedy needs no seed


@pytest.mark.parametrize("run", ["char_run", "bigram_run"])
def test_eval_json_is_consistent(run, texts, request):
    run = request.getfixturevalue(run)
    r = invoke("eval", "--checkpoint", run, "--text-file", texts / "heldout.txt", "--json")
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert figures["characters"] == 5000
    assert figures["bits_per_char"] == pytest.approx(figures["nats_per_char"] / math.log(2))
    assert figures["perplexity"] == pytest.approx(math.exp(figures["nats_per_char"]))
    assert figures["nats_per_char"] < 2.6          # learned more than the character frequencies
    if run.name == "bigram":
        assert figures["tokens"] == 2500 and "nats_per_token" in figures
    text = invoke("eval", "--checkpoint", run, "--split", "valid")
    assert "bits per char" in text.stdout and text.exit_code == 0


def test_eval_odd_length_bigram(bigram_run, tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text(make_text(1001, seed=3))
    r = invoke("eval", "--checkpoint", bigram_run, "--text-file", odd, "--json")
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert figures["characters"] == 1001 and figures["tokens"] == 500


def test_train_refuses_to_overwrite_and_resume_continues(char_run, texts):
    before = (char_run / "config.json").read_bytes()
    r = invoke("train", "--corpus", texts / "train.txt", "--checkpoint-dir", char_run, *SMALL)
    assert r.exit_code == 1 and "--resume" in r.output
    assert (char_run / "config.json").read_bytes() == before
    r = invoke("train", "--checkpoint-dir", char_run, "--resume", "--hidden", "64")
    assert r.exit_code == 1 and "hidden 48 -> 64" in r.output


@pytest.mark.slow
def test_errors_are_one_line_without_traceback(tmp_path, char_run):
    (tmp_path / "empty.txt").write_text("")
    cases = [
        (["train", "--corpus", tmp_path / "missing.txt"], "not found"),
        (["train", "--corpus", tmp_path / "empty.txt"], "empty"),
        (["sample", "--checkpoint", tmp_path / "nope"], "not found"),
        (["sample", "--checkpoint", char_run, "--prime", "Жx"], "U+0416"),
        (["eval", "--checkpoint", tmp_path], "not a charlm run"),
    ]
    for args, words in cases:
        proc = run_cli(*args)       # an exception no command turns into its Error: line raises here
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("Error:") and words in last, (args, proc.stderr)


def test_each_command_in_a_process_counts_its_time_limit_from_its_own_start(corpus_file, tmp_path,
                                                                            monkeypatch):
    """cli.STARTED (the import of cli.py) is where a command run as a process begins, start-up
    included; a command run in a process that lives on (CliRunner here, a script calling main)
    counts from its own start, however long ago cli.py was imported."""
    import cli

    monkeypatch.setattr(cli, "STARTED", cli.STARTED - 10**6)      # imported "days" ago
    for name in ("first", "second"):
        proc = run_cli("train", "--corpus", corpus_file, "--checkpoint-dir", tmp_path / name, "--steps", 12,
                       "--hidden", 16, "--batch-size", 8, "--unrollings", 25, "--sample-every", 0,
                       "--log-every", 12, "--valid-size", 500, "--time-limit", 600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["stopped"] == "finished" and summary["step"] == 12, summary
    # what train is handed: this invocation's start, or the start run() hands over (cli.STARTED)
    seen = []

    def fake_train(**kwargs):
        seen.append(kwargs["started"])
        raise SystemExit(0)
    monkeypatch.setattr("charlm.training.trainer.train", fake_train)
    before = __import__("time").perf_counter()
    assert run_cli("train", "--time-limit", 5).returncode == 0
    assert before <= seen[-1] <= __import__("time").perf_counter()
    assert CliRunner().invoke(main, ["train", "--time-limit", 5], obj={"started": cli.STARTED}).exit_code == 0
    assert seen[-1] == cli.STARTED
    # and run(), the command as a process, hands over cli.py's import time (no TensorFlow needed here)
    code = ("import sys, types, time\n"
            "def fake(**kwargs):\n    print(kwargs['started'] == cli.STARTED); raise SystemExit(0)\n"
            "sys.modules['charlm.training.trainer'] = types.SimpleNamespace(train=fake)\n"
            "import cli\ncli._quiet_tensorflow = lambda: None\n"
            "sys.argv = ['cli.py', 'train', '--time-limit', '5']\ncli.run()")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_threads_that_come_too_late_are_said_and_training_goes_on(corpus_file, tmp_path):
    """TensorFlow fixes its threads when it runs its first op: in a process that already ran one,
    an explicit --threads can no longer change them; it says so in a line and trains.  (A new
    process sets them as asked.)"""
    import tensorflow as tf

    from charlm.runtime import set_threads

    tf.constant(1.0) + 1.0                                   # TensorFlow has run an op here
    kept = tf.config.threading.get_intra_op_parallelism_threads()
    asked = kept + 1
    assert set_threads(asked) is False and tf.config.threading.get_intra_op_parallelism_threads() == kept
    proc = run_cli("train", "--corpus", corpus_file, "--checkpoint-dir", tmp_path / "run", "--steps", 5,
                   "--hidden", 16, "--batch-size", 8, "--unrollings", 25, "--sample-every", 0,
                   "--log-every", 5, "--valid-size", 500, "--threads", asked)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 5
    notes = [line for line in proc.stderr.splitlines() if line.startswith(f"--threads {asked}:")]
    assert notes == [f"--threads {asked}: TensorFlow already runs in this process and keeps "
                     f"{kept or 'all'} thread(s) per op (a new process takes --threads)"], proc.stderr
    assert run_cli("train", "--corpus", corpus_file, "--checkpoint-dir", tmp_path / "auto", "--steps", 5,
                   "--hidden", 16, "--batch-size", 8, "--unrollings", 25, "--sample-every", 0,
                   "--log-every", 5, "--valid-size", 500).stderr.count("--threads") == 0   # automatic: quiet
    code = ("from charlm.runtime import import_tensorflow_quietly, set_threads\n"
            "tf = import_tensorflow_quietly()\n"
            "print(set_threads(3), tf.config.threading.get_intra_op_parallelism_threads())")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert fresh.stdout.split() == ["True", "3"], fresh.stderr[-2000:]


def test_bad_options_are_usage_errors():
    for args in (["train", "--hidden", "0"], ["train", "--dropout", "1.0"], ["sample", "--length", "-1"],
                 ["sample", "--temperature", "-0.5"], ["train", "--model", "word"]):
        r = invoke(*args)
        assert r.exit_code == 2, args


def test_help_is_fast_and_imports_no_tensorflow():
    code = "import sys, runpy; sys.argv=['cli.py','--help']\ntry:\n runpy.run_path('cli.py', run_name='__main__')\n" \
           "except SystemExit: pass\nprint('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False")


@pytest.mark.slow
def test_compiled_training_block_is_cached_between_runs(tmp_path, corpus_file):
    """The second run with the same shapes loads the XLA program the first one compiled, though
    its checkpoints cut its blocks to other lengths (10, 10, 5, 5 steps: one padded program)."""
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CHARLM_XLA_CACHE"] = str(cache)
    env["CHARLM_XLA"] = "auto"
    results = []
    for name, every in (("one", "0"), ("two", "25")):
        proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "--corpus", str(corpus_file),
                               "--checkpoint-dir", str(tmp_path / name), "--steps", "30", "--batch-size", "16",
                               "--sample-every", "0", "--log-every", "10", "--checkpoint-every", every,
                               "--seed", "4"],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        # loading the cached program must not spill TensorFlow's C++ log onto the user's screen
        assert not re.search(r"^[EWF]\d{4} ", proc.stderr, re.M), proc.stderr[-2000:]
        entries = sorted(p.name for p in cache.iterdir())
        assert entries and all(e.startswith("xla_compile_cache") for e in entries)
        if name == "one":
            first_entries = entries
    assert entries == first_entries                      # nothing new compiled the second time
    assert results[0]["loss"] == results[1]["loss"]      # and the cached program computes the same


def test_xla_cache_setting(monkeypatch, tmp_path):
    from charlm.runtime import prepare_environment, xla_cache_dir

    monkeypatch.setenv("CHARLM_XLA_CACHE", "off")
    assert xla_cache_dir() is None
    monkeypatch.delenv("CHARLM_XLA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert xla_cache_dir() == str(tmp_path / "charlm" / "xla")
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    prepare_environment()
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 --tf_xla_persistent_cache_directory={tmp_path / 'charlm' / 'xla'}"
    assert (tmp_path / "charlm" / "xla").is_dir()


@pytest.mark.slow
def test_command_line_exit_leaves_every_file_complete(tmp_path, corpus_file):
    """cli.py skips TensorFlow's interpreter teardown (os._exit) once a command is done: the
    checkpoint, the TensorBoard events and stdout must all be complete by then, and exit codes kept."""
    run = tmp_path / "run"
    # (a 25-token window: no XLA compile of the training block, which this test is not about)
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "--corpus", str(corpus_file),
                           "--checkpoint-dir", str(run), "--steps", "12", "--batch-size", "8",
                           "--sample-every", "0", "--log-every", "12", "--hidden", "16", "--unrollings", "25"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 12
    import tensorflow as tf

    steps = set()
    for path in (run / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps.update(event.step for v in event.summary.value if v.tag == "train/loss")
    assert 12 in steps         # one report: fewer events than the writer queues before it flushes
    assert tf.train.latest_checkpoint(str(run / "ckpt")).endswith("ckpt-12")
    usage = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "--hidden", "0"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
