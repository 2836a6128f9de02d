"""Dynamic evaluation (charlm.use.dynamic): scored before adapted, causal, the run folder untouched."""
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from conftest import make_text


@pytest.fixture(scope="module")
def dyn_run(tmp_path_factory):
    import charlm

    d = tmp_path_factory.mktemp("dynamic")
    (d / "train.txt").write_text(make_text(30000, seed=1, sentences=True))
    (d / "heldout.txt").write_text(make_text(3000, seed=5, sentences=True))
    charlm.train(corpus=str(d / "train.txt"), checkpoint_dir=d / "run", preset="ud730", hidden=24,
                 embedding_size=8, batch_size=16, unrollings=32, steps=100, optimizer="adam",
                 learning_rate=0.02, valid_size=2000, valid_split="spread", sample_every=0,
                 log_every=60, log=lambda *_: None)
    return d


def scorer(run, **settings):
    from charlm import load_model
    from charlm.use.dynamic import DynamicScorer
    from charlm.use.scoring import _split_tokens

    model, tokenizer, info = load_model(run)
    dynamic = DynamicScorer(model, tokenizer, **settings)
    dynamic.gather_statistics(_split_tokens(info, tokenizer, "error")[0],
                              count=4000, streams=4)
    return dynamic, model, tokenizer


def test_a_character_never_changes_the_scores_before_it(dyn_run):
    dynamic, _, tokenizer = scorer(dyn_run / "run", learning_rate=0.05, decay=0.01, segment=8, streams=3)
    text = (dyn_run / "heldout.txt").read_text()[:2400]
    ids = tokenizer.vocab.encode(text)
    base, settings = dynamic.score_tokens(ids)
    assert settings["streams"] == 3
    # one change in the middle of the second piece, one near the first piece's end (which the
    # second piece reads before its own text)
    for p in (1200, 790):
        changed = ids.copy()
        changed[p] = (changed[p] + 1) % tokenizer.vocab.size
        other, _ = dynamic.score_tokens(changed)
        np.testing.assert_array_equal(other[:p], base[:p])
        assert other[p] != base[p]
        # adapted weights carry the change forward, beyond the characters right after it
        assert np.count_nonzero(other[p + 20:] != base[p + 20:]) > 20


def test_no_update_is_the_static_figure_and_updates_adapt(dyn_run):
    from charlm.use.scoring import Scorer

    text = (dyn_run / "heldout.txt").read_text()[:1500]
    frozen, model, tokenizer = scorer(dyn_run / "run", learning_rate=0.0, segment=16, streams=1)
    ids = tokenizer.vocab.encode(text)
    static = Scorer(model, tokenizer, streams=1).score_ids(ids)
    positions, _ = frozen.score_tokens(ids)
    assert positions.sum() == pytest.approx(static.nats, rel=1e-5)
    adapting, _, _ = scorer(dyn_run / "run", learning_rate=0.01, segment=16, streams=1)
    assert abs(adapting.score_tokens(ids)[0].sum() - static.nats) > 1e-3 * static.nats


def test_one_step_moves_no_weight_more_than_lr_times_the_clip(dyn_run):
    """A weight's normalised gradient is clipped: after one segment (no decay) no weight of the
    table or the softmax has moved more than lr * step_clip, some have moved exactly that much,
    and without the clip the same step moves some weights further."""
    prime = (dyn_run / "heldout.txt").read_text()[:16]                  # one segment
    lr, clip = 0.5, 0.2
    moved = {}
    for step_clip in (clip, np.inf):
        dynamic, model, tokenizer = scorer(dyn_run / "run", learning_rate=lr, decay=0.0, segment=16,
                                           streams=1, step_clip=step_clip)
        weights, _, _ = dynamic.adapt(tokenizer.vocab.encode(prime))
        trained = model.step_weights()
        table = np.abs(weights["table"].numpy() - trained["table"].numpy()).max()
        softmax = max(np.abs(weights["softmax"][k].numpy() - trained["softmax"][k].numpy()).max()
                      for k in ("out_w", "out_b"))
        moved[step_clip] = table, softmax
    for part in range(2):
        assert moved[clip][part] == pytest.approx(lr * clip, rel=1e-4)
        assert moved[np.inf][part] > 1.5 * lr * clip


def tree_state(folder):
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_eval_dynamic_reports_both_figures_and_leaves_the_run_alone(dyn_run):
    run = dyn_run / "run"
    before = tree_state(run)
    static = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--text-file",
                                       str(dyn_run / "heldout.txt"), "--json"])
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--text-file", str(dyn_run / "heldout.txt"),
                                  "--json", "--dynamic", "--dynamic-segment", "20"])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    plain = json.loads(static.stdout.strip().splitlines()[-1])
    assert figures["characters"] == 3000
    assert figures["static_nats_per_char"] == pytest.approx(plain["nats_per_char"], abs=1e-6)
    assert figures["gain_nats_per_char"] == pytest.approx(figures["static_nats_per_char"] - figures["nats_per_char"])
    assert figures["dynamic"]["segment"] == 20 and figures["dynamic"]["stats_tokens"] > 0
    assert np.isfinite(figures["nats_per_char"]) and figures["nats_per_char"] != figures["static_nats_per_char"]
    assert tree_state(run) == before


def test_eval_dynamic_errors_are_one_line(dyn_run, tmp_path):
    bad = CliRunner().invoke(main, ["eval", "--checkpoint", str(dyn_run / "run"), "--dynamic-lr", "0.1"])
    assert bad.exit_code != 0 and "need --dynamic" in bad.output
    # the statistics pass needs the training text: a copy of the run whose corpus is gone
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(dyn_run / "run", copy)
    config = json.loads((copy / "config.json").read_text())
    config["train"]["corpus"] = str(tmp_path / "gone.txt")
    (copy / "config.json").write_text(json.dumps(config))
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(copy), "--text-file",
                                  str(dyn_run / "heldout.txt"), "--dynamic"])
    assert r.exit_code != 0 and r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1
    assert "gone.txt" in r.output and "Traceback" not in r.output
    # a missing or directory --text-file is named as the text to score, with or without --dynamic
    for path, what in ((tmp_path / "absent.txt", "not found"), (tmp_path, "is a directory")):
        for extra in ([], ["--dynamic"]):
            r = CliRunner().invoke(main, ["eval", "--checkpoint", str(dyn_run / "run"), "--text-file", str(path),
                                          *extra])
            assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1, r.output
            assert r.output.startswith(f"Error: text file to score {what}") and str(path) in r.output, r.output


# -- sample --dynamic ------------------------------------------------------------------------------
def test_adapting_to_a_prime_starts_where_dynamic_scoring_ends(dyn_run):
    """adapt() reads the prime as dynamic scoring does: with no update it is the static reading,
    and with updates its logits are those the scorer gives after the prime's last token."""
    import tensorflow as tf
    from charlm.use.sampling import Sampler

    prime = (dyn_run / "heldout.txt").read_text()[:160]          # a multiple of the segment
    frozen, model, tokenizer = scorer(dyn_run / "run", learning_rate=0.0, decay=0.0, segment=16, streams=1)
    ids = tokenizer.vocab.encode(prime)
    _, _, logits = frozen.adapt(ids)
    static_logits, _ = Sampler(model, tokenizer)._read(ids, 1)
    np.testing.assert_allclose(logits.numpy(), static_logits.numpy(), atol=1e-4)
    # the same seed: the frozen-adapted sampler writes the static sampler's text
    options = dict(prime=prime, length=60, seed=3)
    assert Sampler(model, tokenizer, dynamic=frozen).generate(**options) == \
        Sampler(model, tokenizer).generate(**options)

    adapting, _, _ = scorer(dyn_run / "run", learning_rate=0.05, segment=16, streams=1)
    weights, _, logits = adapting.adapt(ids)
    _, _, scored_logits = adapting.score_tokens(ids, last_logits=True)
    np.testing.assert_allclose(logits.numpy()[0], scored_logits.numpy(), atol=1e-4)
    assert np.abs(logits.numpy() - static_logits.numpy()).max() > 1e-2
    assert np.abs(weights["table"].numpy() - model.step_weights()["table"].numpy()).max() > 1e-3
    adapted = Sampler(model, tokenizer, dynamic=adapting).generate(**options, num_samples=2)
    assert all(t.startswith(prime) and len(t) == len(prime) + 60 for t in adapted)


def test_sample_dynamic_from_the_command_line(dyn_run, tmp_path):
    run = dyn_run / "run"
    before = tree_state(run)
    prime = tmp_path / "prime.txt"
    prime.write_text((dyn_run / "heldout.txt").read_text()[:500])
    r = CliRunner().invoke(main, ["sample", "--checkpoint", str(run), "--prime-file", str(prime), "--dynamic",
                                  "--length", "80", "--seed", "1"])
    assert r.exit_code == 0, r.output
    text = r.stdout.strip("\n")
    assert text.startswith(prime.read_text()) and len(text) == 500 + 80
    assert tree_state(run) == before
    bad = CliRunner().invoke(main, ["sample", "--checkpoint", str(run), "--dynamic"])
    assert bad.exit_code == 2 and "--prime" in bad.output and "Traceback" not in bad.output


def dense_reading(dynamic, grid, settings=None):
    """Dynamic evaluation's reading of ``grid`` ``[rows, streams]`` written the plain way: every
    stream's whole table a tensor, stepped and decayed in full every segment.  ``settings``
    None: the statistics pass instead (no steps; the squared gradients summed, table first)."""
    import tensorflow as tf

    streams, size = grid.shape[1], dynamic.table.shape[0]
    table = tf.tile(dynamic.table[None], [streams, 1, 1])
    rest = dynamic._copies(streams)
    state, top = dynamic._zero(streams)
    squares = [tf.zeros_like(t) for t in (dynamic.table, *dynamic.trained)]
    for row in range(0, grid.shape[0], dynamic.segment):
        ids = tf.constant(grid[row:row + dynamic.segment].astype(np.int32))
        with tf.GradientTape() as tape:
            tape.watch([table, rest])
            rows = tf.reshape(table, [streams * size, -1])
            nats, state, outputs = dynamic._forward(rows, ids + size * tf.range(streams)[None], rest, ids, state, top)
            loss = tf.reduce_sum(tf.reduce_mean(nats, 0))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, [table, *rest])]
        top = outputs[-1]
        if settings is None:
            squares = [q + tf.reduce_sum(tf.square(g), 0) for q, g in zip(squares, grads)]
            continue
        scale, rate, lr, decay, _ = settings
        trained = [dynamic.table, *dynamic.trained]
        table, *rest = [p - lr * tf.clip_by_value(g * s, -dynamic.step_clip, dynamic.step_clip) + decay * r * (t - p)
                        for p, g, s, r, t in zip([table, *rest], grads, scale, rate, trained)]
    return table, rest, squares


def test_the_sparse_table_update_is_the_dense_one(dyn_run):
    """The per-stream tables are stepped only in the rows a segment reads, their decay applied
    when a row is read again: after a prime, the same weights as a plain dense update of every
    row every segment; and the statistics pass's squared gradients are the dense ones."""
    dynamic, model, tokenizer = scorer(dyn_run / "run", learning_rate=0.05, decay=0.2, segment=8, streams=1)
    ids = tokenizer.vocab.encode((dyn_run / "heldout.txt").read_text()[:96])      # 12 segments
    # some rows are read, left for segments, then read again
    pieces = [set(ids[i:i + 8]) for i in range(0, 96, 8)]
    assert any(t in pieces[a] and t not in pieces[a + 1] and t in pieces[a + 2] for a in range(10) for t in pieces[a])
    weights, _, _ = dynamic.adapt(ids)
    table, rest, _ = dense_reading(dynamic, ids[:, None], dynamic._step_settings())
    np.testing.assert_allclose(weights["table"].numpy(), table[0].numpy(), atol=2e-5)
    assert np.abs(table[0].numpy() - dynamic.table.numpy()).max() > 1e-2
    for key, want in zip(("out_w", "out_b"), rest[-2:]):
        np.testing.assert_allclose(weights["softmax"][key].numpy(), want[0].numpy(), atol=2e-5)

    grid = ids[:64].reshape(2, 32).T                     # the statistics pass's two columns
    dynamic.gather_statistics(ids[:64], count=64, streams=2)
    _, _, squares = dense_reading(dynamic, grid)
    for got, want in zip(dynamic.rms, squares):
        np.testing.assert_allclose(got.numpy(), np.sqrt(want.numpy() / 8), rtol=1e-5, atol=1e-8)
