"""The output layer (charlm.nn.softmax): the adaptive softmax against a plain-numpy full
log-softmax of the same factorised model, its gradient against finite differences, the gathered
training loss against the dense one, and train / resume / sample / eval / export of an adaptive
run on a text of 400 distinct characters through the command line."""
import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli import main
from charlm.config import ModelConfig, build_configs
from charlm.errors import CharlmError
from charlm.nn import softmax
from charlm.nn.model import CharLM
from charlm.run.checkpoint import load_model, read_run_config

HIDDEN, TOKENS, CUTOFFS = 12, 40, [8, 20]


def layer(seed=0, dtype=tf.float64, cutoffs=CUTOFFS, tokens=TOKENS, hidden=HIDDEN):
    """An adaptive layer with random weights and biases and a random ranking of the tokens."""
    rng = np.random.default_rng(seed)
    weights = {name: rng.normal(0, 0.5, shape)
               for name, shape in softmax.shapes("adaptive", hidden, tokens, cutoffs).items()}
    out = softmax.build("adaptive", hidden, tokens, weights, dtype, cutoffs=cutoffs,
                        rank=rng.permutation(tokens))
    for name, var in out.variables.items():
        if name.endswith("_b"):
            var.assign(rng.normal(0, 0.5, var.shape))
    return out


def numpy_log_probs(out, h):
    """The full ``[N, V]`` log-softmax of the factorised model, from its weights in numpy."""
    def log_softmax(x):
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    v = {name: var.numpy() for name, var in out.variables.items()}
    head = log_softmax(h @ v["head_w"] + v["head_b"])
    first = out.cutoffs[0]
    by_rank = [head[:, :first]]
    for k in range(len(out.cutoffs)):
        tail = log_softmax(h @ v[f"tail{k}_proj"] @ v[f"tail{k}_w"] + v[f"tail{k}_b"])
        by_rank.append(head[:, first + k:first + k + 1] + tail)
    by_rank = np.concatenate(by_rank, axis=1)
    return by_rank[:, v["token_rank"]]          # token t's column is its rank's


def data(seed=1, n=30, tokens=TOKENS, hidden=HIDDEN):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, hidden)), rng.integers(0, tokens, n).astype(np.int32)


def test_probabilities_over_the_whole_vocabulary_sum_to_one():
    out = layer(dtype=tf.float32)
    h, _ = data()
    lp = out.log_probs(tf.constant(h.reshape(5, 6, HIDDEN), tf.float32)).numpy()
    assert lp.shape == (5, 6, TOKENS)
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    # the zero state's prediction too (the first token of a text)
    np.testing.assert_allclose(np.exp(out.initial_logits().numpy().astype(np.float64)).sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize("cutoffs", [[8, 20], [10], [1, 2, 39]])
def test_adaptive_loss_equals_the_numpy_full_log_softmax(cutoffs):
    out = layer(cutoffs=cutoffs, dtype=tf.float32)
    h, y = data()
    reference = numpy_log_probs(out, h)
    hh = tf.constant(h, tf.float32)
    np.testing.assert_allclose(out.log_probs(hh).numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(float(out.loss(hh, y)), -reference[np.arange(y.size), y].mean(), atol=1e-5)
    np.testing.assert_allclose(out.target_log_probs(hh, y).numpy(), reference[np.arange(y.size), y], atol=1e-5)
    # the streamed scorer's per-step figure, every cluster at every row
    np.testing.assert_allclose(out.step_nats(out.step_weights(), hh, y).numpy(), -reference[np.arange(y.size), y],
                               atol=1e-5)


def test_gathered_training_loss_equals_the_dense_one_and_so_do_the_gradients():
    out = layer()
    h, y = data(n=64)
    hh = tf.constant(h)
    variables = [v for v in out.variables.values() if v.trainable]
    results = []
    for total in (out.total, out.dense_total):
        with tf.GradientTape() as tape:
            tape.watch(hh)
            value = total(hh, tf.constant(y))
        results.append((float(value), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(value, [hh, *variables])]))
    (gathered, g1), (dense, g2) = results
    np.testing.assert_allclose(gathered, dense, rtol=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_adaptive_loss_gradient_against_finite_differences():
    out = layer()
    h, y = data(n=20)
    hh = tf.Variable(h)
    variables = [hh, *(v for v in out.variables.values() if v.trainable)]
    with tf.GradientTape() as tape:
        loss = out.loss(hh, y)
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
    rng = np.random.default_rng(3)
    eps = 1e-6
    for var, grad in zip(variables, grads):
        value = var.numpy()
        for index in [tuple(rng.integers(0, s) for s in value.shape) for _ in range(4)]:
            moved = []
            for sign in (1, -1):
                v = value.copy()
                v[index] += sign * eps
                var.assign(v)
                moved.append(float(out.loss(hh, y)))
            var.assign(value)
            np.testing.assert_allclose(grad[index], (moved[0] - moved[1]) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_a_model_with_an_adaptive_softmax_steps_as_it_unrolls():
    config = ModelConfig(hidden=16, embedding_size=8, softmax="adaptive", softmax_cutoffs=[5, 12])
    rng = np.random.default_rng(0)
    model = CharLM(config, 30, token_rank=rng.permutation(30))
    tokens = rng.integers(0, 30, (6, 3)).astype(np.int32)
    whole, _ = model.unroll(tf.constant(tokens), model.zero_state(3))
    weights, state = model.step_weights(), model.zero_state(3)
    for t in range(6):
        logits, state = model.step(weights, tf.constant(tokens[t]), state)
        np.testing.assert_allclose(logits.numpy(), whole[t].numpy(), atol=1e-5)
    top, _ = model.features(tf.constant(tokens[:-1]), model.zero_state(3))
    np.testing.assert_allclose(float(model.softmax.loss(top, tokens[1:])),
                               -np.mean(np.take_along_axis(whole[:-1].numpy(), tokens[1:, :, None], -1)), atol=1e-5)
    # the ranking and the cutoffs are the model's: weights for tail shapes, the rank in the checkpoint
    assert model.token_rank.trainable is False and "token_rank" not in [v.name for v in model.trainable_variables]


def test_adaptive_sampling_draws_the_exact_distribution_in_token_order():
    """The sampler picks over the adaptive layer's columns in rank order and maps them back to
    tokens: the draws' frequencies, greedy and top-k are those of the token-order distribution."""
    from charlm.data.vocab import Tokenizer, Vocabulary
    from charlm.use.sampling import Sampler

    config = ModelConfig(hidden=16, embedding_size=8, softmax="adaptive", softmax_cutoffs=[5, 12])
    rng = np.random.default_rng(4)
    model = CharLM(config, 30, token_rank=rng.permutation(30))
    for var in model.softmax.variables.values():      # a spread-out, non-uniform distribution
        if var.trainable:
            var.assign(rng.normal(0, 1.5, var.shape))
    vocab = Vocabulary("".join(chr(0x4E00 + i) for i in range(30)))
    sampler = Sampler(model, Tokenizer.for_ids("char", vocab, np.arange(30)))
    prime = vocab.chars[3]
    logits, _ = sampler._read(vocab.encode(prime), 1)
    want = np.exp(logits.numpy()[0].astype(np.float64))
    want /= want.sum()
    firsts = [text[1] for text in sampler.generate(prime=prime, length=1, seed=5, num_samples=20000)]
    freq = np.bincount(vocab.encode("".join(firsts)), minlength=30) / len(firsts)
    np.testing.assert_allclose(freq, want, atol=0.012)
    greedy = sampler.generate(prime=prime, length=1, temperature=0, num_samples=2)
    assert {t[1] for t in greedy} == {vocab.chars[int(np.argmax(want))]}
    top3 = {t[1] for t in sampler.generate(prime=prime, length=1, top_k=3, seed=6, num_samples=600)}
    assert top3 == {vocab.chars[i] for i in np.argsort(-want)[:3]}


def test_auto_chooses_by_vocabulary_size_and_cutoffs_are_checked():
    small = softmax.resolve(ModelConfig(softmax="auto"), softmax.AUTO_TOKENS)
    large = softmax.resolve(ModelConfig(softmax="auto"), 5750)
    assert (small.softmax, small.softmax_cutoffs) == ("full", [])
    assert large.softmax == "adaptive" and large.softmax_cutoffs == softmax.default_cutoffs(5750)
    for n in (2, 3, 300, 1001, 5750, 20000, 200000):
        cut = softmax.default_cutoffs(n)
        assert softmax.check_cutoffs(cut, n) is None and 1 <= len(cut) <= 2, (n, cut)
    with pytest.raises(CharlmError, match="below the 300 tokens"):
        softmax.resolve(ModelConfig(softmax="adaptive", softmax_cutoffs=[100, 300]), 300)
    with pytest.raises(CharlmError, match="increasing"):
        build_configs("small", softmax="adaptive", softmax_cutoffs=[50, 20])
    with pytest.raises(CharlmError, match="apply to --softmax adaptive"):
        build_configs("small", softmax="full", softmax_cutoffs=[20])
    assert build_configs("fast")[0].softmax == "auto" and build_configs("small")[0].softmax == "full"
    # the fast preset's width follows its softmax; a width given stays
    widths = [softmax.resolve(build_configs("fast")[0], n).hidden for n in (27, 729, 5750)]
    assert widths == [softmax.WIDTH["full"], softmax.WIDTH["full"], softmax.WIDTH["adaptive"]] == [512, 512, 384]
    # ... and the matmuls' number format: float32 matmuls take at most FLOAT32_WIDTH
    widths = [softmax.resolve(build_configs("fast")[0], n, bfloat16=False).hidden for n in (27, 5750)]
    assert widths == [softmax.FLOAT32_WIDTH, softmax.WIDTH["adaptive"]] == [384, 384]
    assert softmax.resolve(build_configs("fast", hidden=256)[0], 5750).hidden == 256
    assert softmax.resolve(build_configs("fast", hidden=512)[0], 27, bfloat16=False).hidden == 512
    # and so does its embedding; an embedding given stays, and no other preset's changes
    sizes = [softmax.resolve(build_configs("fast")[0], n).embedding_size for n in (27, 5750)]
    assert sizes == [softmax.EMBEDDING["full"], softmax.EMBEDDING["adaptive"]] == [64, 256]
    assert softmax.resolve(build_configs("fast", embedding_size=32)[0], 5750).embedding_size == 32
    assert softmax.resolve(build_configs("small")[0], 5750).embedding_size == 64
    # a config.json written before the field existed is a full softmax
    old = {k: v for k, v in ModelConfig().__dict__.items() if not k.startswith("softmax")}
    assert ModelConfig(**old).validate().softmax == "full"


# -- end to end, through the command line --------------------------------------------------------
def zipf_text(n, distinct=400, seed=0):
    """Text over ``distinct`` CJK characters with Zipfian frequencies."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, distinct + 1)
    ids = rng.choice(distinct, size=n, p=p / p.sum())
    ids[:distinct] = np.arange(distinct)       # every character occurs
    return "".join(chr(0x4E00 + i) for i in ids)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


RUN = ["--softmax", "adaptive", "--byte-fallback", "off", "--hidden", "24", "--batch-size", "8", "--unrollings", "25", "--optimizer", "adam",
       "--learning-rate", "0.01", "--seed", "2", "--log-every", "20", "--sample-every", "0", "--valid-size", "600"]


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    corpus, held = root / "corpus.txt", root / "held.txt"
    corpus.write_text(zipf_text(12000), encoding="utf-8")
    held.write_text(zipf_text(1500, seed=9), encoding="utf-8")
    run = root / "run"
    r = invoke("train", "--corpus", corpus, "--checkpoint-dir", run, "--steps", "40", "--keep-best", *RUN)
    assert r.exit_code == 0, r.output
    return run, held


def test_adaptive_run_trains_resumes_samples_and_scores(adaptive_run):
    run, held = adaptive_run
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["softmax"] == "adaptive" and config["softmax_cutoffs"] == softmax.default_cutoffs(400)
    model, tokenizer, _ = load_model(run)
    rank = model.token_rank.numpy()
    assert sorted(rank) == list(range(tokenizer.num_tokens))
    # the most frequent character of the training text (the Zipfian first) is ranked first
    assert rank[tokenizer.vocab.encode(chr(0x4E00))[0]] == 0
    r = invoke("train", "--resume", "--checkpoint-dir", run, "--steps", "60")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["step"] == 60
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    r = invoke("sample", "--checkpoint", run, "--length", "30", "--seed", "1", "--prime", chr(0x4E00))
    assert r.exit_code == 0 and len(r.output.strip().splitlines()[-1]) == 31, r.output
    scores = []
    for streams in ("1", "4"):
        r = invoke("eval", "--checkpoint", run, "--text-file", held, "--streams", streams, "--json")
        assert r.exit_code == 0, r.output
        scores.append(json.loads(r.output.strip().splitlines()[-1])["nats_per_char"])
    assert 2.0 < scores[0] < np.log(400) + 0.5
    assert abs(scores[0] - scores[1]) < 0.05          # streams warm up on the text before them
    r = invoke("eval", "--checkpoint", run, "--best", "--split", "valid", "--json")
    assert r.exit_code == 0, r.output


def test_adaptive_savedmodel_scores_as_eval_does(adaptive_run, tmp_path):
    run, held = adaptive_run
    text = held.read_text(encoding="utf-8")[:300]
    r = invoke("export", "--checkpoint", run, tmp_path / "saved")
    assert r.exit_code == 0, r.output
    exported = tf.saved_model.load(str(tmp_path / "saved"))
    r = invoke("eval", "--checkpoint", run, "--text-file", _write(tmp_path / "t.txt", text), "--streams", "1", "--json")
    want = json.loads(r.output.strip().splitlines()[-1])["nats_per_char"]
    np.testing.assert_allclose(float(exported.score(text=tf.constant(text))), want, rtol=1e-5)
    sample = exported.generate(prime=tf.constant(text[:3]), length=tf.constant(20), temperature=tf.constant(1.0))
    assert len(sample.numpy().decode("utf-8")) == 23


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_dynamic_evaluation_adapts_an_adaptive_run_with_its_softmax_kept(adaptive_run):
    run, held = adaptive_run
    r = invoke("eval", "--checkpoint", run, "--text-file", held, "--dynamic", "--dynamic-lr", "0.003",
               "--streams", "2", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])
    static = json.loads(invoke("eval", "--checkpoint", run, "--text-file", held, "--json").output.strip()
                        .splitlines()[-1])["nats_per_char"]
    assert result["static_nats_per_char"] == pytest.approx(static, abs=1e-4)
    assert result["nats_per_char"] != result["static_nats_per_char"]        # the weights moved
    assert abs(result["nats_per_char"] - static) < 0.5


@pytest.mark.parametrize("command", [["export", "--format", "web"], ["export", "--format", "tflite"],
                                     ["train", "--init-from"]])
def test_paths_without_an_adaptive_softmax_refuse_in_one_line(adaptive_run, tmp_path, command):
    run, held = adaptive_run
    if command[0] == "export":
        args = [*command, "--checkpoint", run, tmp_path / "out.tflite"]
    else:
        args = [*command, run, "--corpus", held, "--checkpoint-dir", tmp_path / "new", "--steps", "1"]
    r = invoke(*args)
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("Error:") and "adaptive" in lines[-1], r.output
    assert not (tmp_path / "out.tflite").exists() and not (tmp_path / "new").exists()
    assert read_run_config(run)["model_config"].softmax == "adaptive"


def test_the_softmax_benchmark_times_blocks_of_both_softmaxes(tmp_path):
    """benchmarks/softmax.py's step timing calls Trainer._block outside a training loop, on a
    full and an adaptive softmax: each gives a positive time per step for every repeat."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "softmax.py"
    spec = importlib.util.spec_from_file_location("softmax_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = zipf_text(6000)
    trainers = {kind: bench.trainer_for(text, kind, cutoffs=[40, 160] if kind == "adaptive" else (), hidden=16,
                                        run_dir=tmp_path / kind, batch_size=4, unrollings=5, embedding_size=8)
                for kind in ("full", "adaptive")}
    times = bench.time_blocks(trainers, steps=2, repeat=2)
    assert set(times) == {"full", "adaptive"}
    assert all(len(t) == 2 and all(x > 0 for x in t) for t in times.values())
