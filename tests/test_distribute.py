"""tf.distribute: two mirrored replicas on logical CPU devices and two workers on 127.0.0.1.

The replicas split the global batch and all-reduce the summed gradient, so without dropout they
must follow the single-device run step for step, and all of them must learn (held-out loss under
2.6 nats/char after 200 Adam steps at 64 units).  Each distributed run is a fresh process: logical
devices and a cluster can only be set before TensorFlow starts; single-device runs and the
scoring run in this process (``run_cli``).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, make_text, run_cli
from charlm.training.distribute import cluster_spec, is_chief_task, setup
from charlm.errors import CharlmError

pytestmark = pytest.mark.slow     # whole training processes and scripts

RUN = ["--hidden", "64", "--optimizer", "adam", "--learning-rate", "0.01", "--steps", "200",
       "--batch-size", "32", "--unrollings", "20", "--seed", "3", "--sample-every", "0",
       "--valid-size", "500", "--log-every", "100"]
BOUND = 180          # seconds any one process may take


def cli(*args, env=None, timeout=BOUND):
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return proc


def summary(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def held_out(run_dir, text_file):
    return summary(run_cli("eval", "--checkpoint", run_dir, "--text-file", text_file, "--json"))["nats_per_char"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    corpus, held = root / "corpus.txt", root / "held.txt"
    corpus.write_text(make_text(120000, seed=5), encoding="utf-8")
    held.write_text(make_text(6000, seed=99), encoding="utf-8")
    return root, corpus, held


@pytest.fixture(scope="module")
def single(data):
    root, corpus, held = data
    run = root / "single"
    result = summary(run_cli("train", "--corpus", corpus, "--checkpoint-dir", run, *RUN))
    return run, result, held_out(run, held)


def test_two_mirrored_replicas_follow_one_device(data, single):
    root, corpus, held = data
    run = root / "mirrored"
    proc = cli("train", "--corpus", corpus, "--checkpoint-dir", run, *RUN,
               "--distribute", "mirrored", "--replicas", "2")
    result = summary(proc)
    assert "mirrored over 2 replicas" in proc.stderr
    assert result["step"] == 200 and result["stopped"] == "finished"
    assert (run / "ckpt" / "ckpt-200.index").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["distribute"] == "mirrored" and config["replicas"] == 2
    # the same global batch and the same summed gradient: the same run, to rounding
    _, one, one_held = single
    assert result["loss"] == pytest.approx(one["loss"], abs=1e-4)
    two_held = held_out(run, held)
    assert two_held == pytest.approx(one_held, abs=1e-3)
    assert two_held < 2.6 and one_held < 2.6


def test_mirrored_dropout_run_resumes_on_one_device(data):
    root, corpus, held = data
    run = root / "mirrored-bigram"
    args = ["--model", "bigram", "--embedding-size", "16", "--hidden", "32", "--dropout", "0.2",
            "--optimizer", "adam", "--learning-rate", "0.01", "--batch-size", "8", "--unrollings", "5",
            "--sample-every", "0", "--valid-size", "300"]
    first = summary(cli("train", "--corpus", corpus, "--checkpoint-dir", run, "--steps", "40", *args,
                        "--distribute", "mirrored", "--replicas", "2"))
    assert first["step"] == 40
    # the checkpoint is a plain one: a single device continues it, and so would 4 replicas
    second = summary(run_cli("train", "--checkpoint-dir", run, "--resume", "--steps", "60"))
    assert second["step"] == 60
    assert held_out(run, held) < 4.0


def test_mirrored_replicas_follow_one_device_with_an_adaptive_softmax(tmp_path):
    # 350 distinct characters, Zipfian: every replica's rows gather their own tail positions
    rng = __import__("numpy").random.default_rng(4)
    p = 1 / (rng.permutation(350) + 1.0)
    ids = rng.choice(350, size=20000, p=p / p.sum())
    ids[:350] = range(350)
    corpus = tmp_path / "zh.txt"
    corpus.write_text("".join(chr(0x4E00 + int(i)) for i in ids), encoding="utf-8")
    args = ["--softmax", "adaptive", "--softmax-cutoffs", "40,150", "--hidden", "32", "--optimizer", "adam",
            "--learning-rate", "0.01", "--batch-size", "16", "--unrollings", "25", "--steps", "30",
            "--sample-every", "0", "--valid-size", "500", "--log-every", "10", "--seed", "1"]
    one = summary(run_cli("train", "--corpus", corpus, "--checkpoint-dir", tmp_path / "one", *args))
    two = summary(cli("train", "--corpus", corpus, "--checkpoint-dir", tmp_path / "two", *args,
                      "--distribute", "mirrored", "--replicas", "2"))
    config = json.loads((tmp_path / "two" / "config.json").read_text())["model"]
    assert config["softmax"] == "adaptive" and config["softmax_cutoffs"] == [40, 150]
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-4)
    assert two["valid_perplexity"] == pytest.approx(one["valid_perplexity"], rel=1e-3)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(corpus, run, tmp_path, *extra):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        # a prepared-corpus folder of their own: both workers start preparing it at once
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "CHARLM_COLLECTIVE_TIMEOUT": "60", "TMPDIR": str(tmp_path),
               "CHARLM_PREPARED_DIR": str(tmp_path / "prepared")}
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "train", "--corpus", str(corpus), "--checkpoint-dir",
             str(run), *RUN, "--distribute", "multi-worker", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


def finish(procs):
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=BOUND)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


def test_a_signal_to_one_worker_stops_both_at_the_same_step(data, tmp_path):
    root, corpus, _ = data
    run = root / "multi-stopped"
    procs = start_workers(corpus, run, tmp_path, "--steps", "1000000", "--checkpoint-every", "0")
    deadline = time.monotonic() + BOUND
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().strip()):
        assert time.monotonic() < deadline and procs[0].poll() is None, "the chief logged nothing"
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)
    outputs = finish(procs)
    for code, out, err in outputs:
        assert code == 0, err[-3000:]
    chief, worker = (json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs)
    assert chief["stopped"] == worker["stopped"] == "interrupted"
    assert chief["step"] == worker["step"] < 1000000
    assert "another worker stopped" in outputs[0][2]
    assert (run / "ckpt" / f"ckpt-{chief['step']}.index").exists()


def test_two_workers_on_loopback_train_like_one(data, single, tmp_path):
    root, corpus, held = data
    run = root / "multi"
    procs = start_workers(corpus, run, tmp_path)
    outputs = finish(procs)
    for code, out, err in outputs:
        assert code == 0, err[-3000:]
    chief, worker = (json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs)
    assert chief["step"] == worker["step"] == 200
    assert chief["loss"] == pytest.approx(worker["loss"], abs=1e-6)
    assert "multi-worker over 2 replicas, worker 0" in outputs[0][2]
    # one worker prepared the corpus while the other waited, then both read the same file
    folders = [p for p in (tmp_path / "prepared").iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1, folders
    logs = [err for _, _, err in outputs]
    assert sum("prepared 120,000 characters in 1 file" in err for err in logs) == 1, logs
    assert sum(f"corpus: 120,000 characters in 1 file, prepared in {folders[0]}" in err for err in logs) == 1
    # only the chief wrote the run: its checkpoints, metrics and logs; the worker's scratch is gone
    assert (run / "ckpt" / "ckpt-200.index").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert len(list((run / "logs").iterdir())) == 1
    assert not list(tmp_path.glob("charlm-worker-*"))
    _, one, one_held = single
    assert chief["loss"] == pytest.approx(one["loss"], abs=1e-4)
    assert held_out(run, held) == pytest.approx(one_held, abs=1e-3)


@pytest.mark.parametrize("args, env, words", [
    (["--replicas", "2"], {}, "needs --distribute mirrored"),
    (["--distribute", "multi-worker"], {"TF_CONFIG": ""}, "needs TF_CONFIG"),
    (["--distribute", "multi-worker"], {"TF_CONFIG": "{not json"}, "not valid JSON"),
    (["--distribute", "multi-worker"], {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'},
     "not in the cluster"),
    (["--distribute", "mirrored", "--replicas", "3", "--batch-size", "16"], {}, "divide evenly among 3"),
])
def test_distribution_mistakes_are_one_line(data, tmp_path, args, env, words):
    _, corpus, _ = data
    args = ["train", "--corpus", corpus, "--checkpoint-dir", tmp_path / "run", "--steps", "5", *args]
    # replicas on logical CPU devices are made before TensorFlow starts: only a new process can
    proc = cli(*args, env=env, timeout=120) if "mirrored" in args else run_cli(*args, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and words in last, proc.stderr
    assert not (tmp_path / "run" / "ckpt").exists()


def test_chief_is_the_chief_task_or_worker_zero():
    assert is_chief_task({"worker": ["a", "b"]}, {"type": "worker", "index": 0})
    assert not is_chief_task({"worker": ["a", "b"]}, {"type": "worker", "index": 1})
    assert is_chief_task({"chief": ["c"], "worker": ["a"]}, {"type": "chief", "index": 0})
    assert not is_chief_task({"chief": ["c"], "worker": ["a"]}, {"type": "worker", "index": 0})


def test_cluster_spec_rejects_other_task_types(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(CharlmError, match="not 'ps'"):
        cluster_spec()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}))
    assert cluster_spec()[1]["type"] == "worker"


def test_setup_without_distribution_is_none():
    assert setup(None) is None and setup("none", 1) is None
    with pytest.raises(CharlmError, match="must be one of"):
        setup("parameter-server")
