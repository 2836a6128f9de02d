"""sample's options (nucleus, temperatures, prime files, stops, streaming), train --init-from and
--keep-best: real models, real runs, the filtered distribution against a numpy reference."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli import main
from conftest import ROOT, make_text
from reference import filtered_probs

from charlm.config import ModelConfig, build_configs
from charlm.data.vocab import Tokenizer, Vocabulary
from charlm.nn.model import CharLM
from charlm.run.checkpoint import load_model
from charlm.training import finetune
from charlm.training.trainer import Trainer
from charlm.use import sampling
from charlm.use.sampling import Sampler, filtered_logits, pick

TINY = ["--hidden", 16, "--batch-size", 8, "--unrollings", 8, "--optimizer", "adam", "--learning-rate", 0.02,
        "--log-every", 10, "--sample-every", 0, "--valid-size", 400, "--checkpoint-every", 10]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- the distribution sampling draws from ------------------------------------------------------------
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 0.9), (0.7, 10, 0.5), (1.5, 5, 1.0),
                                                     (1.0, 0, 0.02), (2.0, 0, 0.999), (0.5, 3, 0.8)])
def test_filtered_distribution_matches_the_reference(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(0, 2, size=(6, 40)).astype(np.float32)
    want = filtered_probs(logits, temperature, top_k, top_p)
    for k, p in ((top_k, top_p), (tf.constant(top_k), tf.constant(top_p))):   # traced and known
        got = tf.nn.softmax(filtered_logits(tf.constant(logits), tf.constant(temperature), k, p)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_draws_follow_the_filtered_distribution():
    logits = np.random.default_rng(1).normal(0, 1.5, size=(1, 12)).astype(np.float32)
    want = filtered_probs(logits, 0.8, 8, 0.7)[0]
    rows = 20000
    tokens = pick(tf.constant(np.repeat(logits, rows, 0)), tf.constant(0.8), 8, tf.constant([3, 4], tf.int64),
                  0.7).numpy()
    counts = np.bincount(tokens, minlength=12) / rows
    assert np.all(counts[want == 0] == 0)                 # nothing outside the nucleus, ever
    np.testing.assert_allclose(counts, want, atol=0.015)  # > 4 standard errors


# -- streaming, stops, primes --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampler():
    tok = Tokenizer("char", Vocabulary("abcdefgh "))
    return Sampler(CharLM(ModelConfig(hidden=16, embedding_size=8), tok.num_tokens, seed=3), tok)


def test_stream_is_generate_in_pieces(sampler):
    pieces = list(sampler.stream("ab", 3000, seed=5, num_samples=2, chunk_seconds=1e-4))
    assert len(pieces) > 2 and pieces[0] == ["ab", "ab"]
    texts = sampler.generate("ab", 3000, seed=5, num_samples=2)
    assert ["".join(p[row] for p in pieces) for row in range(2)] == texts
    assert all(len(t) == 3002 for t in texts)


def test_stop_ends_after_its_first_occurrence(sampler):
    full = sampler.generate("ab", 2000, seed=7)[0]
    stops = [full[400:403], full[90:92]]
    end = min(full.find(s, 2 - len(s) + 1) + len(s) for s in stops)
    assert sampler.generate("ab", 2000, seed=7, stop=stops)[0] == full[:end]
    streamed = sampler.stream("ab", 2000, seed=7, stop=stops, chunk_seconds=1e-4)
    assert "".join(p[0] for p in streamed) == full[:end]
    assert sampler.generate("ab", 2000, seed=7, stop=["hhhhhhhhhhhhhhhhhhhh"])[0] == full   # the cap
    greedy = sampler.generate("ab", 30, temperature=0)[0]
    # a stop that begins in the prime ends the text at the first generated character
    assert sampler.generate("ab", 30, temperature=0, stop=["b" + greedy[2]])[0] == greedy[:3]


def test_a_tiny_nucleus_is_greedy_and_a_long_prime_is_read_in_pieces(sampler, monkeypatch):
    assert sampler.generate("ab", 200, seed=1, top_p=1e-6)[0] == sampler.generate("ab", 200, temperature=0)[0]
    tok, model = sampler.tokenizer, sampler.model
    monkeypatch.setattr(sampling, "LOOP_STEPS", 64)     # pieces of 64 tokens: the same cut, smaller
    prime = make_text(64 * 3 + 10, seed=4).replace("t", "a")
    ids = tok.vocab.encode(prime, oov="skip")
    logits, _ = sampler._read(ids, 1)
    whole, _ = model.unroll(tf.constant(ids.astype(np.int32)[:, None]), model.zero_state(1))
    np.testing.assert_allclose(logits.numpy(), whole[-1].numpy(), atol=1e-5)


# -- a run with --keep-best, sampled from the command line ----------------------------------------------
@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("best")
    (d / "train.txt").write_text(make_text(20000, seed=1, sentences=True))
    r = invoke("train", "--corpus", d / "train.txt", "--checkpoint-dir", d / "run", *TINY, "--steps", 40,
               "--keep-best")
    assert r.exit_code == 0, r.output
    return d


def test_keep_best_keeps_the_lowest_validation_loss(best_run):
    run = best_run / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [np.log(m["valid_perplexity"]) for m in metrics]
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["step"] == metrics[int(np.argmin(losses))]["step"]
    assert len(list((run / "best").glob("*.index"))) == 1 and len(list((run / "ckpt").glob("*.index"))) == 3
    figures = json.loads(invoke("eval", "--checkpoint", run, "--best", "--json").stdout.splitlines()[-1])
    assert abs(figures["nats_per_char"] - best["valid_loss"]) < 1e-4
    assert load_model(run, best=True)[2]["checkpoint_path"].endswith(f"ckpt-{best['step']}")


def test_sample_options_from_the_command_line(best_run, tmp_path):
    run = best_run / "run"
    (tmp_path / "prime.txt").write_text("The men ")
    by_file = invoke("sample", "--checkpoint", run, "--prime-file", tmp_path / "prime.txt", "--length", 50,
                     "--seed", 2, "--top-p", 0.9, "--top-k", 20)
    by_flag = invoke("sample", "--checkpoint", run, "--prime", "The men ", "--length", 50, "--seed", 2,
                     "--top-p", 0.9, "--top-k", 20)
    assert by_file.exit_code == 0 and by_file.stdout == by_flag.stdout
    assert by_file.stdout.startswith("The men ") and len(by_file.stdout) == len("The men ") + 50 + 1
    two = invoke("sample", "--checkpoint", run, "--length", 30, "--seed", 2, "--temperature", 0.5,
                 "--temperature", 1.0, "--num-samples", 2, "--best")
    assert two.exit_code == 0
    assert [line for line in two.stderr.splitlines() if line.startswith("temperature")] == \
        ["temperature 0.5", "temperature 1"]
    samples = two.stdout.split("\n\n")
    assert len(samples) == 4 and all(len(s.strip("\n")) == 30 for s in samples)
    stopped = invoke("sample", "--checkpoint", run, "--length", 400, "--seed", 2, "--stop", "e", "--prime", "a")
    assert stopped.stdout.endswith("e\n") and stopped.stdout.count("e") == 1


@pytest.mark.parametrize("args,words", [
    (["sample", "--prime-file", "{tmp}/missing.txt"], "--prime-file"),
    (["sample", "--stop", ""], "--stop must not be empty"),
    (["sample", "--top-p", 0], "--top-p"),
    (["sample", "--top-p", 1.5], "--top-p"),
    (["sample", "--prime", "a", "--prime-file", "{run}/config.json"], "either --prime or --prime-file"),
    (["train", "--init-from", "{tmp}", "--corpus", "{train}"], "not a charlm run"),
    (["train", "--init-from", "{run}", "--corpus", "{train}", "--hidden", 32], "--hidden 16 -> 32"),
    (["train", "--init-from", "{run}", "--corpus", "{train}", "--cell", "gru"], "--cell lstm -> gru"),
    (["train", "--init-from", "{run}", "--checkpoint-dir", "{run}", "--resume"], "--init-from starts a new run"),
    (["train", "--corpus", "{train}", "--keep-best", "--valid-size", 0], "--valid-size > 0"),
])
def test_bad_values_end_in_one_error_line(best_run, tmp_path, args, words):
    fill = dict(tmp=tmp_path, run=best_run / "run", train=best_run / "train.txt")
    args = [str(a).format(**fill) for a in args]
    if args[0] == "sample":
        args += ["--checkpoint", fill["run"]]
    r = invoke(*args, "--checkpoint-dir", tmp_path / "new") if args[0] == "train" and "--resume" not in args \
        else invoke(*args)
    assert r.exit_code in (1, 2)
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and words in errors[0], r.output
    assert not (tmp_path / "new").exists()


def test_sample_best_without_a_best_checkpoint(tmp_path, best_run):
    shutil.copytree(best_run / "run", tmp_path / "plain", ignore=shutil.ignore_patterns("best"))
    r = invoke("sample", "--checkpoint", tmp_path / "plain", "--best")
    assert r.exit_code == 1 and r.output.splitlines()[-1].startswith("Error: --best:")


# -- fine-tuning ------------------------------------------------------------------------------------------
def test_row_sources_match_tokens_by_their_text():
    old, new = Vocabulary("abc"), Vocabulary("abcd")
    for kind in ("char", "bigram"):
        a, b = Tokenizer(kind, old), Tokenizer(kind, new)
        sources = finetune.row_sources(a, b)
        texts_a, texts_b = finetune.token_texts(a), finetune.token_texts(b)
        assert all(texts_a[s] == t for s, t in zip(sources, texts_b) if s >= 0)
        assert [t for s, t in zip(sources, texts_b) if s < 0] == [t for t in texts_b if "d" in t]
    sparse = Tokenizer("bigram", old, np.array([[0, 1], [2, 2]]))
    assert finetune.token_texts(sparse) == ["a", "b", "c", "ab", "cc"]
    assert finetune.row_sources(sparse, Tokenizer("bigram", new, np.array([[2, 2], [3, 0]]))).tolist() == \
        [0, 1, 2, -1, 4, -1]


def test_init_from_takes_the_weights_and_gives_new_characters_new_rows(best_run, tmp_path):
    run = best_run / "run"
    text = make_text(3000, seed=5).upper() + "{}"         # capitals and braces: characters RUN lacks
    origin = finetune.open_origin(run)
    overrides = finetune.shape_from(origin, {})
    model_cfg, train_cfg = build_configs("ud730", **overrides, valid_size=300)
    trainer = Trainer(model_cfg, train_cfg, text, tmp_path / "ft", origin=origin, log=lambda *_: None)
    old, old_tok, _ = load_model(run)
    fresh = CharLM(model_cfg, trainer.tokenizer.num_tokens, seed=train_cfg.seed)
    new_chars = trainer.vocab.chars
    assert set(new_chars) == set(old_tok.vocab.chars) | set(text)
    out_w, old_w, fresh_w = trainer.model.out_w.numpy(), old.out_w.numpy(), fresh.out_w.numpy()
    emb, old_emb = trainer.model.embedding, old.embedding
    for i, ch in enumerate(new_chars):
        if ch in old_tok.vocab.chars:
            j = old_tok.vocab.chars.index(ch)
            np.testing.assert_array_equal(out_w[:, i], old_w[:, j])
            assert trainer.model.out_b.numpy()[i] == old.out_b.numpy()[j]
            if emb is None:
                np.testing.assert_array_equal(trainer.model.cells[0].kernel.numpy()[i],
                                              old.cells[0].kernel.numpy()[j])
        else:
            np.testing.assert_array_equal(out_w[:, i], fresh_w[:, i])
    np.testing.assert_array_equal(trainer.model.cells[0].kernel.numpy()[-16:], old.cells[0].kernel.numpy()[-16:])
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["init_from"]["run"] == str(run.resolve())
    assert config["init_from"]["checkpoint"].endswith("ckpt-40")


def test_a_pipe_gets_the_text_as_it_is_made(best_run):
    """Read the first characters of a sample far too long to finish, then close the pipe: the text
    came before the end, and the command stops quietly (``| head``)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "sample", "--checkpoint", best_run / "run",
                             "--length", str(10**8), "--prime", "the"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(200)
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert first.startswith(b"the") and len(first) == 200
    assert b"Traceback" not in proc.stderr.read()
