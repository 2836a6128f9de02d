"""``export --format tflite``: the model's step as a LiteRT (TensorFlow Lite) flatbuffer, for phones.

The file has one signature, ``step``: ``token`` int32 ``[1]`` and ``state`` float32
``[layers, 2, H]`` (each layer's ``h`` then ``c``; a GRU or RNN leaves ``c`` at zero) in,
``logits`` ``[tokens]`` and the new ``state`` out.  It is :meth:`charlm.nn.model.CharLM.step`
itself, traced once, with the weights as constants, and built from LiteRT's builtin operators
only (gather, fully connected, add, mul, logistic, tanh, split, ...), so the interpreters on
PyPI (``ai-edge-litert``), which ship without the TensorFlow ("Flex") operators, run it.

Beside ``OUT.tflite``, ``OUT.vocab.json`` holds the token table (:func:`charlm.use.portable.token_table`):
the text of every token, and how a prime is cut into tokens.  Sampling is the caller's: the
README's example picks from the softmax of ``logits`` in a few lines of numpy.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import tensorflow as tf

from charlm.errors import CharlmError
from charlm.use.portable import describe


class StepModule(tf.Module):
    """``step(token, state) -> {logits, state}`` over a model's frozen step weights."""

    def __init__(self, model):
        super().__init__(name="charlm_step")
        self.model = model
        layers, hidden = model.config.layers, model.config.hidden
        self.state_shape = [layers, 2, hidden]
        spec = [tf.TensorSpec([1], tf.int32, name="token"), tf.TensorSpec(self.state_shape, tf.float32, name="state")]
        self.step = tf.function(self._step, input_signature=spec, autograph=False)

    def _step(self, token, state):
        weights = self.model.step_weights()
        layers = [(state[layer, 0][None], state[layer, 1][None]) for layer in range(self.state_shape[0])]
        logits, new_state = self.model.step(weights, token, layers)
        return {"logits": logits[0], "state": tf.stack([tf.concat(s, 0) for s in new_state])}


def vocab_path(output: Path) -> Path:
    """Where the token table goes: ``model.tflite`` -> ``model.vocab.json``."""
    return output.with_name(output.stem + ".vocab.json")


def write_tflite(model, tokenizer, output: Path, name: str):
    """Convert the step and write ``output`` and its vocabulary file (neither may exist)."""
    module = StepModule(model)
    with tempfile.TemporaryDirectory(prefix=".charlm-tflite-", dir=output.parent) as tmp:
        # through a SavedModel, so the LiteRT signature keeps the name "step" and its argument names
        tf.saved_model.save(module, tmp, signatures={"step": module.step.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["step"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises several error types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CharlmError(f"the LiteRT converter refused the model: {first[:300]}")
    table = {**describe(model, tokenizer, name), "state_shape": module.state_shape,
             "signature": "step", "inputs": ["token", "state"], "outputs": ["logits", "state"]}
    # both files complete under temporary names first, so a failure leaves neither
    files = [(vocab_path(output), (json.dumps(table, ensure_ascii=False) + "\n").encode("utf-8")),
             (output, flatbuffer)]
    staged = [(path, path.with_name(f".{path.name}.partial")) for path, _ in files]
    try:
        for (_, data), (_, tmp) in zip(files, staged):
            tmp.write_bytes(data)
        for path, tmp in staged:
            tmp.rename(path)
    finally:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
