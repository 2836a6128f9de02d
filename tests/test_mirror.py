"""ud730 problem 3, the mirror model: data, masking, shapes, learning, resume and the CLI's errors."""
import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli import main
from conftest import make_text
from charlm.mirror import config, data, model, trainer, use
from charlm.data.vocab import Vocabulary

SMALL = ["--hidden", "32", "--embedding-size", "16", "--batch-size", "32", "--max-chars", "16",
         "--max-words", "3", "--learning-rate", "0.01", "--log-every", "50", "--seed", "1"]


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("mirror") / "corpus.txt"
    path.write_text(make_text(30000, seed=3))
    return path


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("mirror-runs") / "run"
    r = invoke("mirror", "train", "--corpus", corpus, "--checkpoint-dir", run, "--steps", 400, *SMALL)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["step"] == 400
    return run


# -- data ---------------------------------------------------------------------------------------------
def test_targets_mirror_each_word_and_ignore_padding():
    vocab = Vocabulary(" abcdefghijklmnopqrstuvwxyz")
    lines = ["the quick brown fox", "a", "ab  cd ", "xyz"]
    src, lengths = data.pad_rows([vocab.encode(line).astype(np.int32) for line in lines])
    src[1, 1:] = 5                                   # garbage in the padding changes nothing
    target = data.mirror_targets(src, lengths, space=0)
    assert [vocab.decode(row[:n]) for row, n in zip(target, lengths)] == [data.mirror_words(s) for s in lines]
    assert (target[np.arange(src.shape[1]) >= lengths[:, None]] == 0).all()


def test_pieces_cut_long_lines_at_spaces():
    line = "alpha beta gamma delta epsilon zeta"
    parts = use.pieces(line, 12)
    assert parts == ["alpha beta", "gamma delta", "epsilon zeta"]
    assert " ".join(parts) == line and all(len(p) <= 12 for p in parts)
    assert use.pieces("short", 12) == ["short"] and use.pieces("", 5) == [""]
    assert use.pieces("abcdefghijklmnop qr", 10) == ["abcdefghijklmnop", "qr"]   # a long word stays whole


def test_training_lines_fit_and_resume_from_the_step_alone():
    cfg = config.MirrorConfig(batch_size=8, max_chars=20, max_words=4, random_fraction=0.5)
    text = make_text(3000)
    vocab = Vocabulary.from_text(text + data.LETTERS)
    a, b = data.LineSource(text, vocab, cfg), data.LineSource(text, vocab, cfg)
    for step in (0, 5, 40, 33):
        src, lengths = a.batch(step)
        again = b.batch(step)
        assert np.array_equal(src, again[0]) and np.array_equal(lengths, again[1])
        assert src.shape[1] % data.WIDTH_STEP == 0 and 1 <= lengths.min() and lengths.max() <= 20
        for row, n in zip(src, lengths):
            line = vocab.decode(row[:n])
            assert 1 <= len(line.split(" ")) <= 4 and "" not in line.split(" ")


# -- the model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    tf.random.set_seed(0)
    return model.MirrorNet(config.MirrorConfig(hidden=16, embedding_size=8), vocab_size=27, seed=2)


def _batch(rows, width=None):
    src, lengths = data.pad_rows([np.array(r, np.int32) for r in rows], width)
    tgt_in, tgt_out = trainer.teacher_arrays(src, lengths, 0, 27, 27)
    return src, lengths, tgt_in, tgt_out


def test_shapes(net):
    src, lengths, tgt_in, tgt_out = _batch([[1, 2, 0, 3], [4, 5, 6]])
    logits = net.logits(src, lengths, tgt_in)
    assert logits.shape == (2, 17, 28)
    memory, keys, bias, (h, c) = net.encode(src, lengths)
    assert memory.shape == keys.shape == (2, 16, 16) and h.shape == c.shape == (2, 16)
    out = net.greedy(src, lengths, 9)
    assert out.shape[0] == 2 and out.shape[1] <= 9 and out.dtype == tf.int32


def test_padding_changes_neither_loss_nor_outputs(net):
    rows = [[1, 2, 0, 3, 4], [5, 6, 7]]
    narrow = _batch(rows, 16)
    wide = list(_batch(rows, 32))
    wide[0][1, 3:] = 9                                # garbage where the short row is padded
    wide[2][1, 5:] = 11
    wide[3][1, 5:] = 12
    loss_a, acc_a = trainer.masked_loss(net, *narrow)
    loss_b, acc_b = trainer.masked_loss(net, *wide)
    assert abs(float(loss_a) - float(loss_b)) < 1e-6 and float(acc_a) == float(acc_b)
    la = net.logits(*narrow[:3]).numpy()
    lb = net.logits(*wide[:3]).numpy()
    for k, n in enumerate([5, 3]):
        np.testing.assert_allclose(la[k, :n + 1], lb[k, :n + 1], atol=1e-5)
    # a row decodes the same alone as beside a longer one
    alone = _batch([rows[1]])
    np.testing.assert_array_equal(net.greedy(*alone[:2], 6).numpy()[0], net.greedy(*wide[:2], 6).numpy()[1])


# -- training and the CLI -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_small_model_learns_to_mirror(trained, corpus, tmp_path):
    heldout = tmp_path / "heldout.txt"
    heldout.write_text(make_text(4000, seed=9))
    r = invoke("mirror", "eval", "--checkpoint", trained, "--text-file", heldout, "--lines", 200, "--json")
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout.splitlines()[-1])
    assert figures["lines"] == 200
    # chance is 1/28 per character; a model that did not learn mirrors almost nothing
    assert figures["char_accuracy"] > 0.6 and figures["word_accuracy"] > 0.4, figures
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in metrics] == [50, 100, 150, 200, 250, 300, 350, 400]
    assert metrics[-1]["loss"] < metrics[0]["loss"] / 3
    assert list((trained / "logs").glob("events.out.tfevents.*"))


def test_run_keeps_one_output_line_per_input_line(trained):
    lines = ["the man", "", "of the world", "a " * 30 + "b", "it"]
    r = invoke("mirror", "run", "--checkpoint", trained, input="\n".join(lines) + "\n")
    assert r.exit_code == 0, r.output
    out = r.stdout.split("\n")
    assert out[-1] == "" and len(out) == len(lines) + 1
    assert out[1] == ""
    # a line longer than the model's 16 characters is mirrored piece by piece, joined by spaces
    mirror_model = use.Mirror(trained)
    parts = use.pieces(lines[3], 16)
    assert len(parts) == 4 and out[3] == " ".join(mirror_model.lines(parts))
    r = invoke("mirror", "run", "--checkpoint", trained, "--text", "")
    assert r.exit_code == 0 and r.stdout == "\n"


def test_run_names_unknown_characters_or_skips_them(trained):
    line = error_line(invoke("mirror", "run", "--checkpoint", trained, "--text", "the Ж man"))
    assert "U+0416" in line and "--oov skip" in line
    r = invoke("mirror", "run", "--checkpoint", trained, "--text", "thЖe", "--oov", "skip")
    assert r.exit_code == 0 and len(r.stdout.strip()) == 3


@pytest.mark.slow
def test_resume_continues_exactly(corpus, tmp_path):
    args = ["--hidden", "8", "--embedding-size", "4", "--batch-size", "4", "--max-chars", "12",
            "--max-words", "2", "--log-every", "5", "--checkpoint-every", "5"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert invoke("mirror", "train", "--corpus", corpus, "--checkpoint-dir", straight, "--steps", 40, *args).exit_code == 0
    assert invoke("mirror", "train", "--corpus", corpus, "--checkpoint-dir", halves, "--steps", 20, *args).exit_code == 0
    r = invoke("mirror", "train", "--checkpoint-dir", halves, "--resume", "--steps", 40)
    assert r.exit_code == 0, r.output
    a, b = (tf.train.load_checkpoint(tf.train.latest_checkpoint(str(p / "ckpt"))) for p in (straight, halves))
    # every tensor but the seconds trained (two sessions take longer than one)
    names = [n for n in a.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n and not n.startswith("seconds/")]
    assert any("optimizer" in n for n in names) and any("decoder" in n for n in names)
    for n in names:
        np.testing.assert_array_equal(a.get_tensor(n), b.get_tensor(n), err_msg=n)
    assert "different setup" in error_line(invoke("mirror", "train", "--checkpoint-dir", halves, "--resume",
                                                  "--hidden", "16"))


def test_bad_input_ends_in_one_error_line(trained, corpus, tmp_path):
    assert "not found" in error_line(invoke("mirror", "train", "--corpus", tmp_path / "none.txt",
                                            "--checkpoint-dir", tmp_path / "x", "--steps", 1))
    assert "already holds" in error_line(invoke("mirror", "train", "--corpus", corpus,
                                                "--checkpoint-dir", trained, "--steps", 1))
    assert "not found" in error_line(invoke("mirror", "train", "--checkpoint-dir", tmp_path / "empty", "--resume"))
    assert "needs --checkpoint-dir" in error_line(invoke("mirror", "train", "--resume"))
    assert "not found" in error_line(invoke("mirror", "run", "--checkpoint", tmp_path / "nothing", "--text", "a"))
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"format": 1, "model": {}, "train": {}}))
    assert "not a mirror run" in error_line(invoke("mirror", "run", "--checkpoint", tmp_path / "lm", "--text", "a"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert "no words" in error_line(invoke("mirror", "eval", "--checkpoint", trained, "--text-file", empty))
    assert "no words" in error_line(invoke("mirror", "train", "--corpus", empty, "--checkpoint-dir",
                                           tmp_path / "y", "--steps", 1))


# -- the run machinery it shares with `train`: the budget, the folder lock, signals, reports ------------
TINY_RUN = dict(hidden=8, embedding_size=4, batch_size=4, max_chars=12, max_words=2, log_every=1,
                checkpoint_every=0)


def seconds_saved(run) -> float:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "ckpt")))
    return float(reader.get_tensor("seconds/.ATTRIBUTES/VARIABLE_VALUE"))


def steps_saved(run) -> int:
    return int(tf.train.latest_checkpoint(str(run / "ckpt")).rsplit("-", 1)[1])


@pytest.mark.slow
def test_time_limit_counts_across_a_resume(corpus, tmp_path):
    """Like `train`: the seconds trained are kept in the checkpoint, --resume goes on counting them,
    and a run that used its whole limit refuses to resume with one line."""
    run, logs = tmp_path / "run", []
    # the first step compiles (seconds on a shared CPU), so a 2-second limit ends after it
    first = trainer.train(str(corpus), run, steps=10**6, time_limit=2, log=logs.append, **TINY_RUN)
    assert first.stopped == "time-limit" and first.step == steps_saved(run) >= 1
    assert any(m.startswith("time limit of 2 s reached at step") for m in logs), logs
    used = seconds_saved(run)
    assert used > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == first.step and 0 < records[-1]["time"] <= used
    line = error_line(invoke("mirror", "train", "--checkpoint-dir", run, "--resume"))
    assert "has trained" in line and "--time-limit of 2 s" in line
    assert steps_saved(run) == first.step and seconds_saved(run) == used           # nothing was changed
    again = trainer.train(checkpoint_dir=run, resume=True, time_limit=used + 2, log=logs.append)
    assert again.stopped == "time-limit" and again.step > first.step
    assert seconds_saved(run) > used                  # the count went on from the first session's
    later = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][len(records):]
    assert later and later[0]["step"] == first.step + 1 and later[0]["time"] > used
    assert set(later[0]) == {"step", "loss", "token_accuracy", "grad_norm", "steps_per_sec", "time"}


def test_one_writer_per_run_folder(trained, corpus, tmp_path):
    """The language model's RunLock: a folder a run holds is refused, naming the holder, and left as it was."""
    from charlm.run.folder import RunLock

    before = sorted(p.name for p in trained.rglob("*"))
    lock = RunLock(trained).acquire()
    try:
        line = error_line(invoke("mirror", "train", "--checkpoint-dir", trained, "--resume", "--steps", 500))
        assert "being trained by another process (process" in line
        line = error_line(invoke("mirror", "train", "--corpus", corpus, "--checkpoint-dir", trained))
        assert "being trained by another process" in line
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        other = RunLock(fresh).acquire()
        try:        # an empty folder a run has just locked: refused at the lock, nothing written
            line = error_line(invoke("mirror", "train", "--corpus", corpus, "--checkpoint-dir", fresh, "--steps", 1))
            assert "being trained by another process" in line
            assert [p.name for p in fresh.iterdir()] == ["train.lock"]
        finally:
            other.release()
    finally:
        lock.release()
    assert sorted(p.name for p in trained.rglob("*")) == before


def test_a_signal_saves_and_stops(corpus, tmp_path):
    """SIGINT while training (sent here from the first log line): the step ends, the run saves."""
    import os
    import signal

    def log(message):
        if message.startswith("step"):
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    result = trainer.train(str(corpus), tmp_path / "run", steps=10**6, log=log, **TINY_RUN)
    # noted during step 1's report, seen after step 2 (as `train` sees it after its block)
    assert result.stopped == "interrupted" and result.step == steps_saved(tmp_path / "run") == 2
    assert signal.getsignal(signal.SIGINT) is before
