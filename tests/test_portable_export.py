"""export --format web (a TensorFlow.js page, opened in headless Chromium) and --format tflite
(read by a LiteRT interpreter from PyPI), against charlm's own TensorFlow model.

The run folders are written the way training writes them (config.json, a CheckpointManager
checkpoint) from models whose weights are drawn wide (normal, sigma 0.6), so their logits lie far apart, with
smaller recurrent rows (sigma 0.3), so the state contracts: float32 round-off between two runtimes
then neither decides a greedy pick nor grows through time (a random RNN with wide recurrent
weights is chaotic, and amplifies a 1e-7 difference to a different pick within 50 steps).
"""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import browser
from cli import main
from conftest import ROOT, make_text

TEXT = make_text(3000, seed=3, sentences=True)


def make_run(path, cell="lstm", kind="char", layers=1, hidden=16, embedding=0, sparse=False, seed=0):
    import tensorflow as tf

    from charlm.config import ModelConfig, TrainConfig
    from charlm.data.vocab import Tokenizer, Vocabulary
    from charlm.nn.model import CharLM
    from charlm.run import checkpoint as ckpt

    vocab = Vocabulary.from_text(TEXT)
    pairs = None
    if sparse:      # the sparse layout with half the text's pairs, so a prime's cut mixes pairs and singles
        ids = vocab.encode(TEXT).astype(np.int64)
        keys = np.unique(ids[0:-1:2] * vocab.size + ids[1::2])[::2]
        pairs = np.stack([keys // vocab.size, keys % vocab.size], axis=-1)
    tokenizer = Tokenizer(kind, vocab, pairs)
    config = ModelConfig(kind=kind, hidden=hidden, layers=layers, embedding_size=embedding, cell=cell).validate()
    model = CharLM(config, tokenizer.num_tokens, seed=seed)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.6, v.shape).astype(np.float32))
    for cell in model.cells:        # recurrent rows small: a contracting state forgets round-off
        cell.kernel[cell.input_size:].assign(cell.kernel[cell.input_size:] * 0.5)
    path.mkdir(parents=True)
    ckpt.write_run_config(path, config, TrainConfig(), vocab, tokenizer=tokenizer)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(path / ckpt.CKPT_DIR), max_to_keep=3).save()
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def greedy(run, prime, length):
    """What `sample --temperature 0` prints."""
    r = invoke("sample", "--checkpoint", run, "--prime", prime, "--length", length, "--temperature", 0)
    assert r.exit_code == 0, r.output
    return r.stdout[:-1]


def step_logits(model, tokens):
    """TensorFlow's logits after each token, one step at a time from the zero state."""
    import tensorflow as tf

    weights, state, out = model.step_weights(), model.zero_state(1), []
    for token in tokens:
        logits, state = model.step(weights, tf.constant([token], tf.int32), state)
        out.append(logits.numpy()[0])
    return np.array(out)


# -- web --------------------------------------------------------------------------------------------
def test_web_folder_holds_the_page_the_manifest_and_the_weights(tmp_path):
    from charlm.run.checkpoint import load_model
    from charlm.use.portable import step_arrays
    from charlm.use.web import TFJS_VERSION

    run = make_run(tmp_path / "gru-run", cell="gru", kind="bigram", layers=2, embedding=8)
    for weights in ("float32", "float16"):
        out = tmp_path / weights
        r = invoke("export", "--checkpoint", run, "--format", "web", "--weights", weights, out)
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in out.iterdir()) == ["charlm.js", "index.html", "model.json", "weights.bin"]
        page = (out / "index.html").read_text()
        # the CDN's pinned TensorFlow.js and its WebAssembly backend, then the page's script
        assert re.findall(r'<script src="([^"]+)"', page) == [
            f"https://cdn.jsdelivr.net/npm/@tensorflow/tfjs@{TFJS_VERSION}/dist/tf.min.js",
            f"https://cdn.jsdelivr.net/npm/@tensorflow/tfjs-backend-wasm@{TFJS_VERSION}/dist/tf-backend-wasm.min.js",
            "charlm.js"]
        manifest = json.loads((out / "model.json").read_text())
        assert (manifest["name"], manifest["cell"], manifest["layers"], manifest["dtype"]) == ("gru-run", "gru", 2, weights)
        assert manifest["layout"] == "dense" and len(manifest["tokens"]) == manifest["num_tokens"] == len(manifest["chars"]) ** 2
        blob = (out / "weights.bin").read_bytes()
        assert len(blob) == manifest["weights_bytes"]
        model, _, _ = load_model(run)
        want = step_arrays(model)
        assert [e["name"] for e in manifest["weights"]] == list(want)
        for entry in manifest["weights"]:
            dtype = np.dtype("<f4" if weights == "float32" else "<f2")
            got = np.frombuffer(blob, dtype, entry["size"], entry["offset"]).reshape(entry["shape"])
            np.testing.assert_allclose(got, want[entry["name"]], rtol=0 if weights == "float32" else 1e-3,
                                       atol=0 if weights == "float32" else 1e-4)
    assert (tmp_path / "float16" / "weights.bin").stat().st_size * 2 <= (tmp_path / "float32" / "weights.bin").stat().st_size + 64


@pytest.mark.slow
def test_the_page_in_headless_chromium_generates_what_sample_does(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from charlm.run.checkpoint import load_model

    reason = browser.unavailable()
    if reason:
        pytest.skip(reason)
    site = tmp_path / "site"
    runs = {"lstm": make_run(tmp_path / "lstm", layers=2, seed=1),
            "gru": make_run(tmp_path / "gru", cell="gru", kind="bigram", embedding=8, seed=2),
            "rnn": make_run(tmp_path / "rnn", cell="rnn", kind="bigram", embedding=8, sparse=True, seed=3)}
    for name, run in [*runs.items(), ("half", runs["lstm"])]:
        weights = "float16" if name == "half" else "float32"
        r = invoke("export", "--checkpoint", run, "--format", "web", "--weights", weights,
                   "--tfjs-url", "/node_modules", site / name)
        assert r.exit_code == 0, r.output
    models = {name: load_model(run)[0] for name, run in runs.items()}
    probe = {name: np.random.default_rng(4).integers(0, m.num_tokens, 40).tolist() for name, m in models.items()}
    seeded = {"prime": "And", "length": 90, "temperature": 1, "seed": 7}
    shot = tmp_path / "page.png"
    with browser.serve(site) as url, ThreadPoolExecutor(1) as pool:
        # TensorFlow samples on one core while Chromium runs the pages on the other
        want = pool.submit(lambda: [greedy(runs["lstm"], "The wo", 150), greedy(runs["gru"], "the w", 101),
                                    greedy(runs["rnn"], "you were h", 120)])
        pages = browser.drive([
            {"url": f"{url}/lstm/?prime=The%20wo&length=150&temperature=0", "probe": probe["lstm"],
             "type": [{"prime": "The wo", "length": 150, "temperature": 0}, seeded, seeded], "screenshot": str(shot)},
            {"url": f"{url}/gru/", "type": [{"prime": "the w", "length": 101, "temperature": 0}], "probe": probe["gru"]},
            {"url": f"{url}/rnn/?prime=you%20were%20h&length=120&temperature=0", "probe": probe["rnn"]},
            {"url": f"{url}/half/?prime=The&length=60&temperature=0"},
        ])
        lstm, gru, rnn = want.result()
    for page in pages:
        assert page["state"] == "ready" and page["errors"] == [], page
    for (name, model), page in zip(models.items(), pages):
        np.testing.assert_allclose(page["logits"], step_logits(model, probe[name]), atol=1e-4, rtol=0, err_msg=name)
    (linked, typed, first, second), (odd,), (sparse,), (half,) = (p["outputs"] for p in pages)
    assert linked == typed == lstm                   # the address's parameters, and the typed controls
    assert first == second and first.startswith("And") and len(first) == 93
    assert odd == gru                                # an odd prime opens a pair
    assert sparse == rnn                             # the sparse greedy cut
    assert half.startswith("The") and len(half) == 63 and "float16" in pages[-1]["about"]
    assert "LSTM, 2 × 16 units" in pages[0]["about"] and "chars/s" in pages[0]["status"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


# -- LiteRT -----------------------------------------------------------------------------------------
def litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:         # no ai-edge-litert wheel for this Python: TensorFlow's own
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def check_tflite_step(run, out, steps=200):
    """The LiteRT file's step against TensorFlow's, token by token: logits and state to 1e-4."""
    import tensorflow as tf

    from charlm.run.checkpoint import load_model

    vocab = json.loads(out.with_name(out.stem + ".vocab.json").read_text())
    interpreter = litert_interpreter(out)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not any("flex" in op.lower() or op == "CUSTOM" for op in ops), ops
    step = interpreter.get_signature_runner("step")
    model, _, _ = load_model(run)
    weights = model.step_weights()
    state = model.zero_state(1)
    lite_state = np.zeros(vocab["state_shape"], np.float32)
    for token in np.random.default_rng(5).integers(0, vocab["num_tokens"], steps):
        logits, state = model.step(weights, tf.constant([token], tf.int32), state)
        got = step(token=np.array([token], np.int32), state=lite_state)
        lite_state = got["state"]
        np.testing.assert_allclose(got["logits"], logits.numpy()[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(lite_state, np.stack([np.concatenate([h, c]) for h, c in state]), atol=1e-4)


@pytest.mark.parametrize("cell,kind,layers,embedding", [("lstm", "char", 2, 0), ("gru", "bigram", 1, 8)])
def test_tflite_step_follows_tensorflow_for_200_steps(cell, kind, layers, embedding, tmp_path):
    run = make_run(tmp_path / "run", cell=cell, kind=kind, layers=layers, embedding=embedding)
    out = tmp_path / "phone" / "model.tflite"
    r = invoke("export", "--checkpoint", run, "--format", "tflite", out)
    assert r.exit_code == 0, r.output
    check_tflite_step(run, out)


def readme_block(heading):
    """The first ```python block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)


@pytest.mark.slow
def test_the_readme_generates_from_the_tflite_file_alone(tmp_path):
    run = make_run(tmp_path / "run", cell="rnn", embedding=8)      # the third cell's step check, too
    r = invoke("export", "--checkpoint", run, "--format", "tflite", tmp_path / "model.tflite")
    assert r.exit_code == 0, r.output
    check_tflite_step(run, tmp_path / "model.tflite")
    code = "import sys\n" + readme_block("### LiteRT") + "\nassert 'charlm' not in sys.modules\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout.rstrip("\n")
    assert text.startswith("The ") and len(text) == len("The ") + 200


# -- bad input --------------------------------------------------------------------------------------
def test_bad_export_input_is_one_error_line_and_writes_nothing(tmp_path):
    run = make_run(tmp_path / "run")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.json").write_text((run / "config.json").read_text())        # a run that never saved
    (tmp_path / "taken").mkdir()
    (tmp_path / "m.vocab.json").write_text("{}")
    cases = [(["--checkpoint", run, "--format", "onnx", tmp_path / "new"], "unknown --format 'onnx'"),
             (["--checkpoint", run, "--format", "web", tmp_path / "taken"], "already exists"),
             (["--checkpoint", run, "--format", "tflite", tmp_path / "m.tflite"], "m.vocab.json already exists"),
             (["--checkpoint", empty, "--format", "web", tmp_path / "new"], "holds no saved weights"),
             (["--checkpoint", empty, "--format", "tflite", tmp_path / "x" / "new.tflite"], "holds no saved weights"),
             (["--checkpoint", run, "--weights", "float16", tmp_path / "new"], "--format web only")]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args, message in cases:
        r = invoke("export", *args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
