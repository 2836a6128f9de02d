"""The example walkthrough of ud730 with the Python API stays runnable; TensorBoard files hold the series."""
import runpy
import sys

import pytest

from conftest import ROOT, make_text

pytestmark = pytest.mark.slow     # whole training runs


def test_walkthrough_runs(tmp_path, monkeypatch, capsys):
    """The script as `python examples/ud730_walkthrough.py ...` runs it (in this process: it is
    the Python API's example, and needs no TensorFlow start-up of its own)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(40000, seed=8))
    script = ROOT / "examples" / "ud730_walkthrough.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--corpus", str(corpus), "--steps", "30",
                                      "--out", str(tmp_path / "runs")])
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
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
