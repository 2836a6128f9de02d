"""Training laid over a budget: the spread validation split, the budget schedule, the time limit."""
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.errors import CharlmError
from conftest import make_text, run_cli as cli

TINY = ["--hidden", "16", "--batch-size", "8", "--unrollings", "8", "--embedding-size", "8",
        "--learning-rate", "0.01", "--sample-every", "0", "--valid-size", "2000", "--checkpoint-every", "0"]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(make_text(60000, seed=11, sentences=True))
    return path


# -- the spread split ---------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 200_000), valid=st.integers(0, 50_000))
def test_spread_split_samples_the_whole_text_and_loses_nothing(length, valid):
    from charlm.data.splits import spread_chunks, split_ids

    ids = np.arange(length)
    held, kept = split_ids(ids, valid, "spread")
    assert held.size + kept.size == length
    assert np.array_equal(np.sort(np.concatenate([held, kept])), ids)      # each position once
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)          # both in text order
    assert held.size <= min(valid, length // 10)
    chunks = spread_chunks(length, valid)
    assert sum(e - s for s, e in chunks) == held.size
    if chunks:
        # equal chunks, one in each of len(chunks) equal stretches of the text
        assert len({e - s for s, e in chunks}) == 1
        stretch = length / len(chunks)
        for i, (s, e) in enumerate(chunks):
            assert i * stretch <= s and e <= (i + 1) * stretch + 1
        if valid >= 4000 and length >= 10 * valid:
            assert len(chunks) == 20 and held.size > valid - 20


def test_first_split_is_the_notebooks():
    from charlm.data.splits import split_ids

    held, kept = split_ids(np.arange(50), 10, "first")
    assert held.tolist() == list(range(10)) and kept.tolist() == list(range(10, 50))


# -- the schedule -------------------------------------------------------------------------------------
def test_budget_schedule_warms_up_then_falls_linearly_to_zero():
    from charlm.config import build_configs
    from charlm.training.optim import learning_rate

    _, cfg = build_configs("fast", learning_rate=0.01, warmup_steps=10)
    lr = lambda step, p: float(learning_rate(cfg, step, p))  # noqa: E731
    assert lr(0, 0.0) == pytest.approx(0.001)                      # step 1 of 10 of warm-up
    assert lr(4, 0.0) == pytest.approx(0.005)
    assert lr(9, 0.0) == pytest.approx(0.01)
    assert lr(500, 0.25) == pytest.approx(0.0075)
    assert lr(500, 0.9) == pytest.approx(0.001, rel=1e-5)
    assert lr(500, 1.0) == 0.0 and lr(500, 1.3) == 0.0
    # the ud730 staircase is unchanged: 10, 1, 0.1
    _, ud = build_configs("ud730")
    assert [float(learning_rate(ud, s)) for s in (0, 4999, 5000, 10000)] == pytest.approx([10, 10, 1, 0.1])


def test_budget_progress_by_steps_and_by_time(monkeypatch):
    from charlm.training import budget as budget_module
    from charlm.training.budget import Budget

    by_steps = Budget(steps=200)
    assert by_steps.progress(50) == (0.25, 0.005)
    assert by_steps.block(100) == 100 and not by_steps.out_of_time()
    # 40 s used by earlier sessions, 20 s in this one, 100 s in all: the time sets the pace
    now = 500.0
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: now)      # a clock that stands still
    timed = Budget(steps=10**9, time_limit=100, used=40, started=now - 20)
    timed.record_block(10, 5.0)            # the first block compiles: not a measure
    assert timed.seconds_per_step is None
    timed.record_block(10, 1.0)
    assert timed.seconds_per_step == pytest.approx(0.1)
    p, dp = timed.progress(7)
    span = 100 - timed.reserve
    assert p == pytest.approx(60 / span) and dp == pytest.approx(0.1 / span)
    left = 100 - timed.reserve - 60
    assert timed.block(10**6) == int(left / (budget_module.SLACK * 0.1))
    done = Budget(steps=10**9, time_limit=100, used=99.5, started=now)
    done.record_block(1, 1.0), done.record_block(1, 0.1)
    assert done.out_of_time() and done.block(50) == 1


def test_auto_dropout_grows_with_the_passes_over_the_text():
    from charlm.training.budget import FREE_PASSES, MAX_DROPOUT, dropout_for_passes

    assert dropout_for_passes(0.5) == dropout_for_passes(FREE_PASSES) == 0.0
    rates = [dropout_for_passes(p) for p in (10, 16, 32, 64, 1000)]
    assert rates == sorted(rates) and 0 < rates[0] < rates[1] == pytest.approx(0.2) and rates[-1] == MAX_DROPOUT


@pytest.mark.slow
def test_auto_dropout_is_chosen_once_and_kept(corpus, tmp_path):
    run = tmp_path / "run"
    small = tmp_path / "small.txt"                   # 4,000 characters: 600 steps read it ~19 times
    small.write_text(make_text(4000, seed=2))
    # a step budget, so the choice does not depend on this machine's speed
    proc = cli("train", "--corpus", small, "--preset", "fast", *TINY, "--valid-size", 1000, "--time-limit", 0,
               "--steps", 600, "--log-every", 300, "--checkpoint-dir", run)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stderr.splitlines() if l.startswith("--auto-dropout"))
    passes = float(line.split("about ")[1].split(" times")[0])
    config = json.loads((run / "config.json").read_text())
    from charlm.training.budget import dropout_for_passes
    assert config["model"]["dropout"] == dropout_for_passes(passes) > 0
    assert config["train"]["auto_dropout"] is False and config["model"]["dropout_mask"] == "sequence"
    # an explicit --dropout is the dropout
    from charlm.config import build_configs
    model, train = build_configs("fast", dropout=0.3)
    assert model.dropout == 0.3 and not train.auto_dropout


def test_sequence_dropout_masks_whole_windows():
    import tensorflow as tf

    from charlm.config import ModelConfig
    from charlm.nn.model import CharLM

    x = tf.ones([6, 4, 5])
    for mask, same_over_time in (("sequence", True), ("step", False)):
        model = CharLM(ModelConfig(hidden=5, embedding_size=3, dropout=0.5, dropout_mask=mask), 7)
        kept = model._dropout(x, tf.constant([1, 2], tf.int64), 0).numpy() > 0
        assert np.all(kept == kept[:1]) == same_over_time
        assert 0.2 < kept.mean() < 0.8


def test_adamw_decays_weight_matrices_only():
    import tensorflow as tf

    from charlm.training.optim import Adam

    w, b = tf.Variable(tf.ones([2, 3])), tf.Variable(tf.ones([3]))
    opt = Adam([w, b], weight_decay=0.1)
    opt.apply([tf.zeros([2, 3]), tf.zeros([3])], [w, b], 0.5)
    np.testing.assert_allclose(w.numpy(), 1 - 0.5 * 0.1)
    np.testing.assert_allclose(b.numpy(), 1.0)


# -- the time limit, end to end -----------------------------------------------------------------------
def _simulated_session(budget, clock, step, seconds_per_step, compile_seconds=3.0):
    """The trainer's loop over a Budget on a simulated clock: ``(step, [(step, progress)] per block)``."""
    blocks, first = [], True
    while not budget.out_of_time():
        count = budget.block(10)
        blocks.append((step, budget.progress(step)))
        seconds = count * seconds_per_step + (compile_seconds if first else 0.0)
        clock[0] += seconds
        budget.record_block(count, seconds)
        step, first = step + count, False
    return step, blocks


def test_a_slow_compile_and_slow_steps_end_within_the_limit(monkeypatch):
    """A bigram model of a large vocabulary on a simulated clock: 20 s to compile, 2 s a step,
    every fifth step 20% slower.  Nothing is measured before the first call, so it runs one step;
    its time bounds the next block; the run ends with its end's reserve still left."""
    from charlm.training import budget as budget_module
    from charlm.training.budget import Budget

    clock = [0.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    budget = Budget(steps=10**9, time_limit=150, started=-5.0)          # 5 s of start-up
    step, counts = 0, []
    while not budget.out_of_time():
        count = budget.block(100)
        seconds = sum(2.4 if (step + k) % 5 == 0 else 2.0 for k in range(count)) + (20.0 if not counts else 0.0)
        clock[0] += seconds
        budget.record_block(count, seconds)
        step, counts = step + count, counts + [count]
    assert counts[0] == 1 and budget.bound == pytest.approx(22.4)
    assert budget.used() <= 150 - budget.reserve + 0.5      # the last validation and save still fit
    assert step >= 50                                        # and the time was used, not given away


def test_the_schedule_is_laid_over_the_time_and_a_resume_over_the_new_limit(monkeypatch):
    """A simulated clock (no wall-clock): a 100-s run falls to a zero rate as its time runs out;
    resumed with --time-limit 200, the schedule restarts from half its peak and ends at 200 s."""
    from charlm.config import build_configs
    from charlm.training import budget as budget_module
    from charlm.training.budget import Budget
    from charlm.training.optim import learning_rate

    clock = [1000.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    _, cfg = build_configs("fast", learning_rate=0.01, warmup_steps=10)
    lr = lambda step, p: float(learning_rate(cfg, step, p[0]))  # noqa: E731
    first = Budget(steps=10**9, time_limit=100, started=clock[0] - 4.0)        # 4 s of start-up
    step, blocks = _simulated_session(first, clock, 0, 0.05)
    rates = [lr(s, p) for s, p in blocks]
    assert max(rates) > 0.009 and rates[-1] < 0.0005                   # peak, then (near) zero
    # falling after the warm-up (the first two blocks, of one step each while the speed is unknown)
    assert rates[:2] == sorted(rates[:2]) and rates[2:] == sorted(rates[2:], reverse=True)
    assert 100 - first.reserve - 0.1 <= first.used() <= 100             # the time's end is the run's
    used = first.used()
    again = Budget(steps=10**9, time_limit=100, used=used, started=clock[0])
    with pytest.raises(CharlmError, match="whole --time-limit of 100 s"):
        again.refuse_if_spent("run")
    more = Budget(steps=10**9, time_limit=200, used=used, started=clock[0] - 4.0)
    later, blocks = _simulated_session(more, clock, step, 0.05)
    rates = [lr(s, p) for s, p in blocks]
    assert 0.004 < rates[0] < 0.0055 and rates[-1] < 0.0005 and later > step
    assert 200 - more.reserve - 0.1 <= more.used() <= 200


@pytest.mark.slow
def test_time_limit_ends_the_run_and_resume_continues_its_clock(corpus, tmp_path):
    """End to end: the run stops on its time limit; resuming a spent run is refused in one line;
    a larger limit continues the run's clock (how the rate follows the time: the test above)."""
    run = tmp_path / "run"
    # (in this process no start-up is counted: 5 s give the training more time than 8 s gave a new process)
    proc = cli("train", "--corpus", corpus, "--preset", "fast", *TINY, "--time-limit", 5, "--log-every", 10,
               "--warmup-steps", 10, "--no-auto-dropout",
               "--checkpoint-dir", run)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stopped"] == "time-limit"                  # (how close it came is for benchmarks/budget.py)
    records = metrics(run)
    assert records[-1]["step"] == out["step"]
    rates = [r["learning_rate"] for r in records]
    assert rates[1:] == sorted(rates[1:], reverse=True)    # falling after the first record
    again = cli("train", "--resume", "--checkpoint-dir", run)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith("Error:") and "--time-limit" in again.stderr
    # a limit some seconds past what the first session counted (a loaded machine may count more than 5)
    spent = float(re.search(r"has trained ([0-9.]+) s", again.stderr).group(1))
    more = cli("train", "--resume", "--checkpoint-dir", run, "--time-limit", int(spent) + 5)
    assert more.returncode == 0, more.stderr
    later = metrics(run)[len(records):]
    # the run's clock goes on from the first session's seconds (kept in the checkpoint)
    assert later and later[0]["time"] > records[-1]["time"]
    assert [r["learning_rate"] for r in later] == sorted((r["learning_rate"] for r in later), reverse=True)
    end = json.loads(more.stdout.strip().splitlines()[-1])
    assert end["stopped"] == "time-limit" and end["step"] > out["step"]


@pytest.mark.slow
def test_eval_split_valid_scores_what_training_validated(corpus, tmp_path):
    run = tmp_path / "run"
    # (a 25-character window: no XLA compile of the training block, which this test is not about)
    proc = cli("train", "--corpus", corpus, "--preset", "fast", *TINY, "--unrollings", 25, "--steps", 30,
               "--log-every", 30, "--checkpoint-dir", run, "--precision", "float32")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["train"]["valid_split"] == "spread"
    valid = cli("eval", "--checkpoint", run, "--split", "valid", "--json", "--streams", 1)
    assert valid.returncode == 0, valid.stderr
    score = json.loads(valid.stdout.strip().splitlines()[-1])
    assert score["characters"] == 2000
    # training scores the same characters in streams of ~1000 (each warmed up): close, not equal
    assert score["bits_per_char"] == pytest.approx(metrics(run)[-1]["valid_bpc"], abs=0.02)


def test_a_run_saved_before_its_seconds_were_kept_resumes(corpus, tmp_path):
    import tensorflow as tf

    from charlm.training.trainer import Trainer, train

    run = tmp_path / "run"
    train(str(corpus), run, preset="fast", hidden=16, batch_size=8, unrollings=25, embedding_size=8,
          steps=5, log_every=5, sample_every=0, valid_size=500, log=lambda m: None)
    from charlm.run import checkpoint as ckpt
    info = ckpt.read_run_config(run)
    trainer = Trainer(info["model_config"], info["train_config"], corpus.read_text(), run, resume=True,
                      log=lambda m: None)
    old = tf.train.Checkpoint(**trainer._parts)           # what runs saved before: no "seconds"
    tf.train.CheckpointManager(old, str(run / ckpt.CKPT_DIR), max_to_keep=3).save(checkpoint_number=6)
    logs = []
    again = Trainer(info["model_config"], info["train_config"], corpus.read_text(), run, resume=True,
                    log=logs.append)
    assert float(again.seconds.numpy()) == 0.0 and any("resumed" in m for m in logs)
