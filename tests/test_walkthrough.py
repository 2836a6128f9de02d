"""The example walkthrough of ud730 with the Python API stays runnable; TensorBoard files hold the series."""
import subprocess
import sys

import pytest

from conftest import ROOT, make_text

pytestmark = pytest.mark.slow     # whole training processes and scripts


def test_walkthrough_runs(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(40000, seed=8))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "ud730_walkthrough.py"), "--corpus", str(corpus),
                           "--steps", "30", "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(l.startswith("  char: 30 steps, validation perplexity") for l in lines)
    assert any(l.startswith("bigram: 30 steps, validation perplexity") for l in lines)
    assert sum(l.strip().startswith("'the ") for l in lines) == 6
    events = list((tmp_path / "runs" / "char" / "logs").glob("events.out.tfevents.*"))
    assert events
    import tensorflow as tf

    tags = set()
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"train/loss", "train/minibatch_perplexity", "valid/perplexity", "valid/bits_per_char",
            "train/learning_rate", "train/grad_norm", "train/chars_per_sec", "train/bits_per_char"} <= tags
