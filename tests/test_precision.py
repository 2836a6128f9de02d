"""--precision: bfloat16 matmuls with float32 weights, state and loss; float32 checkpoints either way."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

import charlm
from charlm.fast import precision
from charlm.run.checkpoint import load_model
from charlm.config import ModelConfig
from charlm.errors import CharlmError
from charlm.nn.model import CharLM
from conftest import make_text

SMALL = dict(preset="small", hidden=16, layers=1, embedding_size=8, dropout=0.0, batch_size=8,
             unrollings=25, learning_rate=0.01, valid_size=2000, log_every=40, sample_every=0,
             checkpoint_every=0, seed=2)


def test_auto_takes_bfloat16_only_for_big_models_on_bfloat16_hardware(monkeypatch):
    assert precision.compute_dtype("float32", 512)[0] == tf.float32
    assert precision.compute_dtype("bfloat16", 16)[0] == tf.bfloat16
    monkeypatch.setattr(precision, "bfloat16_hardware", lambda: "AMX")
    assert precision.compute_dtype("auto", 512) == (tf.bfloat16, "AMX")
    assert precision.compute_dtype("auto", 128)[0] == tf.float32
    assert precision.compute_dtype("auto", 512, compiled_with_xla=True)[0] == tf.float32
    monkeypatch.setattr(precision, "bfloat16_hardware", lambda: None)
    assert precision.compute_dtype("auto", 512) == (tf.float32, "no bfloat16 hardware")


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(CharlmError, match="--precision"):
        charlm.build_configs("ud730", precision="float16")


def test_bfloat16_forward_stays_close_to_float32():
    """The same weights, long-window path: bfloat16 matmuls move the loss by far less than training does."""
    cfg = ModelConfig(hidden=32, layers=2, embedding_size=8, init="orthogonal")
    m32 = CharLM(cfg, 20, seed=1)
    m16 = CharLM(cfg, 20, seed=1, compute_dtype=tf.bfloat16)
    tokens = tf.constant(np.random.default_rng(0).integers(0, 20, size=(30, 4)), tf.int32)

    def loss(model):
        logits, _ = model.unroll(tokens[:-1], model.zero_state(4))
        assert logits.dtype == tf.float32
        return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens[1:], logits=logits)))

    assert abs(loss(m16) - loss(m32)) < 0.01


def test_bfloat16_run_trains_saves_float32_and_resumes_in_float32(tmp_path):
    text = make_text(40000, seed=3)
    run = charlm.train(text=text, checkpoint_dir=tmp_path / "run", steps=80, precision="bfloat16",
                       log=lambda m: None, **SMALL)
    first, last = run.history[0], run.history[-1]
    assert last["loss"] < first["loss"] and math.isfinite(run.valid_perplexity)
    model, _, _ = load_model(tmp_path / "run")
    assert {v.dtype for v in model.trainable_variables} == {tf.float32}
    resumed = charlm.train(text=text, checkpoint_dir=tmp_path / "run", resume=True, steps=120,
                           precision="float32", log=lambda m: None)
    assert resumed.step == 120 and math.isfinite(resumed.last_loss)


def test_fast_width_follows_the_matmuls_number_format(tmp_path):
    """`--preset fast` (hidden 0): 512 units where the matmuls run in bfloat16, 384 in float32
    (asked for, no bfloat16 hardware, or a cell that multiplies in float32), written into config.json."""
    from charlm.training.trainer import Trainer

    text = make_text(30000, seed=4)
    widths = {}
    for name, flags in {"bfloat16": dict(precision="bfloat16"), "float32": dict(precision="float32"),
                        "gru": dict(precision="bfloat16", cell="gru")}.items():
        model_cfg, train_cfg = charlm.build_configs("fast", **flags)
        assert model_cfg.hidden == 0
        Trainer(model_cfg, train_cfg, text, tmp_path / name, log=lambda m: None)
        widths[name] = json.loads((tmp_path / name / "config.json").read_text())["model"]["hidden"]
    assert widths == {"bfloat16": 512, "float32": 384, "gru": 384}
