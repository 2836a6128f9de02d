"""SavedModel export, loaded back by plain TensorFlow in a fresh process (no charlm on its path)."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from cli import main
from conftest import make_text

LOADER = r"""
import json, sys
import tensorflow as tf
assert "charlm" not in sys.modules
m = tf.saved_model.load(sys.argv[1])
out = {}
for prime, length in (("ROMEO:", 200), ("The", 201), ("", 5)):
    s = m.generate(prime=tf.constant(prime), length=tf.constant(length), temperature=tf.constant(1.0))
    out[f"{prime}|{length}"] = s.numpy().decode("utf-8")
out["score"] = float(m.score(text=tf.constant(sys.argv[2])))
greedy = dict(prime=tf.constant("The"), length=tf.constant(60), temperature=tf.constant(0.0))
out["greedy"] = g = m.generate(**greedy).numpy().decode("utf-8")
out["nucleus"] = m.generate(**{**greedy, "temperature": tf.constant(1.0)}, top_k=tf.constant(3),
                            top_p=tf.constant(1e-6)).numpy().decode("utf-8")
out["stop"] = m.generate(**greedy, stop=tf.constant(g[20:22])).numpy().decode("utf-8")
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char", "bigram"])
def test_export_generates_in_plain_tensorflow(kind, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(20000, seed=4, sentences=True))
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--corpus", str(corpus), "--checkpoint-dir", str(run), "--model", kind,
                                  "--hidden", "16", "--batch-size", "8", "--unrollings", "8", "--steps", "30",
                                  "--optimizer", "adam", "--learning-rate", "0.01", "--sample-every", "0",
                                  "--valid-size", "300", "--embedding-size", "8"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "saved"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(run), "--output", str(out)])
    assert r.exit_code == 0, r.output
    again = CliRunner().invoke(main, ["export", "--checkpoint", str(run), "--output", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    held = make_text(501, seed=9, sentences=True)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(out), held], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    greedy = got.pop("greedy")
    assert got.pop("nucleus") == greedy                    # a nucleus of one token: the likeliest
    stop = greedy[20:22]
    assert got.pop("stop") == greedy[:greedy.find(stop, 2) + 2]
    for key, text in got.items():
        if key == "score":
            continue
        prime, length = key.split("|")
        assert text.startswith(prime) and len(text) == len(prime) + int(length), key
    from charlm.use.scoring import evaluate

    score, _ = evaluate(run, text=held)
    assert got["score"] == pytest.approx(score.nats_per_char, rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_the_sparse_cut_is_one_rule_in_numpy_and_in_the_graph(bits):
    """greedy_pairs over numpy (the tokenizer) and over graph ops (the SavedModel) against a plain
    left-to-right scan: a known pair where one starts, else one character."""
    import numpy as np
    import tensorflow as tf

    from charlm.data.vocab import NUMPY_OPS, greedy_pairs
    from charlm.use.export import GRAPH_OPS

    known = np.array(bits)
    known[-1] = False                     # no pair starts at the last position
    want_pair, want_single, k = np.zeros_like(known), np.zeros_like(known), 0
    while k < known.size:
        if known[k]:
            want_pair[k], k = True, k + 2
        else:
            want_single[k], k = True, k + 1
    for pair, single in (greedy_pairs(known, NUMPY_OPS), greedy_pairs(tf.constant(known), GRAPH_OPS)):
        np.testing.assert_array_equal(np.asarray(pair), want_pair)
        np.testing.assert_array_equal(np.asarray(single), want_single)
