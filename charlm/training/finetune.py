"""``train --init-from RUN``: a new run that starts from another run's weights (fine-tuning).

The new run's vocabulary is RUN's characters together with the new text's.  Every token both
runs have keeps its rows (its embedding row, or its one-hot input rows of the first cell's kernel,
and its softmax column and bias); tokens RUN lacks start from the new run's own initial weights.
Everything inside the model (the cells, every layer) is RUN's.  The optimizer, the step count and
the schedule start afresh: the new run trains like any new run, from these weights.

:func:`row_sources` is the only place that matches tokens across vocabularies, by the text each
token stands for, so another kind of token (bytes, a softmax laid out otherwise) extends it there.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from charlm.config import ModelConfig
from charlm.data.vocab import Tokenizer, Vocabulary
from charlm.errors import CharlmError

# Model fields a fine-tuned run must share with the run it starts from (the weights' shapes).
SHAPE_FIELDS = ("kind", "cell", "hidden", "layers", "embedding_size")
FLAG = {"kind": "--model", "cell": "--cell", "hidden": "--hidden", "layers": "--layers",
        "embedding_size": "--embedding-size"}


@dataclasses.dataclass
class Origin:
    """The run a new run starts from: its folder, its configs, its tokenizer and checkpoint."""
    run_dir: Path
    info: dict

    @property
    def model_config(self) -> ModelConfig:
        return self.info["model_config"]

    @property
    def tokenizer(self) -> Tokenizer:
        return self.info["tokenizer"]

    def record(self, checkpoint: str) -> dict:
        """What the new run's ``config.json`` keeps about where it came from."""
        return {"run": str(self.run_dir.resolve()), "checkpoint": str(Path(checkpoint).resolve()),
                "corpus": self.info["train_config"].corpus}


def open_origin(run_dir) -> Origin:
    """The run ``--init-from`` names, or one line saying why it cannot be used."""
    from charlm.run.checkpoint import latest_checkpoint, read_run_config

    try:
        info = read_run_config(run_dir)
        latest_checkpoint(run_dir)
    except CharlmError as e:
        raise CharlmError(f"--init-from: {e}")
    return Origin(Path(run_dir), info)


def shape_from(origin: Origin, overrides: dict) -> dict:
    """``overrides`` with the model's shape taken from ``origin``; a different shape asked for
    explicitly is refused."""
    old = dataclasses.asdict(origin.model_config)
    if old["softmax"] != "full":
        raise CharlmError(f"--init-from: {origin.run_dir} has an {old['softmax']} softmax; a fine-tuned run "
                          f"starts from a run with a full softmax")
    if overrides.get("softmax") not in (None, "auto", "full"):
        raise CharlmError(f"--init-from: {origin.run_dir} has a full softmax and a fine-tuned run keeps it "
                          f"(drop --softmax {overrides['softmax']})")
    overrides = {**overrides, "softmax": "full", "softmax_cutoffs": None}
    asked = {k: overrides[k] for k in SHAPE_FIELDS if overrides.get(k) is not None}
    diffs = [f"{FLAG[k]} {old[k]} -> {v}" for k, v in asked.items() if v != old[k]]
    if diffs:
        raise CharlmError(f"--init-from: {origin.run_dir} has another model shape ({'; '.join(diffs)}); "
                          f"a fine-tuned run keeps its cell, width, layers, embedding and token kind")
    return {**overrides, **{k: old[k] for k in SHAPE_FIELDS}}


def joined_vocabulary(origin: Origin, text_vocab: Vocabulary) -> Vocabulary:
    """RUN's characters and the new text's, in code point order (and byte ids if either has them)."""
    old = origin.tokenizer.vocab
    return Vocabulary("".join(sorted(set(old.chars) | set(text_vocab.chars))),
                      byte_fallback=old.bytes or text_vocab.bytes)


def token_texts(tokenizer: Tokenizer) -> list[str]:
    """The text each token stands for, by token id (byte id ``b``: U+DC00 + b, a lone surrogate
    as Python's surrogateescape writes an undecodable byte, so it meets no character's text)."""
    chars = tokenizer.vocab.chars + "".join(chr(0xDC00 + b) for b in range(256 * tokenizer.vocab.bytes))
    if tokenizer.kind == "char":
        return list(chars)
    if tokenizer.sparse:
        return [chars[a] + (chars[b] if b >= 0 else "") for a, b in
                zip(tokenizer.first.tolist(), tokenizer.second.tolist())]
    return [a + b for a in chars for b in chars]


def row_sources(old: Tokenizer, new: Tokenizer) -> np.ndarray:
    """For each token of ``new``, the id of the same token in ``old``, or -1 where ``old`` lacks it."""
    index = {text: i for i, text in enumerate(token_texts(old))}
    return np.array([index.get(text, -1) for text in token_texts(new)], dtype=np.int64)


def take_weights(model, old_model, sources: np.ndarray):
    """Set ``model``'s weights from ``old_model``'s: token rows through ``sources``
    (:func:`row_sources`; -1 keeps ``model``'s own starting row), the rest as they are."""
    known = sources >= 0

    def token_rows(new, old, axis=0):
        value = np.moveaxis(new.numpy(), axis, 0).copy()
        value[known] = np.moveaxis(old.numpy(), axis, 0)[sources[known]]
        return np.moveaxis(value, 0, axis)

    if model.embedding is not None:
        model.embedding.assign(token_rows(model.embedding, old_model.embedding))
    for layer, (cell, old_cell) in enumerate(zip(model.cells, old_model.cells)):
        for new, old in zip(cell.trainable_variables, old_cell.trainable_variables):
            if layer == 0 and model.embedding is None and new is cell.kernel:
                # one-hot input: the kernel's first num_tokens rows are the tokens' input rows
                value = old.numpy()[-model.config.hidden:]
                inputs = token_rows(new[:model.num_tokens], old[:old_model.num_tokens])
                new.assign(np.concatenate([inputs, value], axis=0))
            else:
                new.assign(old)
    model.out_w.assign(token_rows(model.out_w, old_model.out_w, axis=1))
    model.out_b.assign(token_rows(model.out_b, old_model.out_b))
    return int(known.sum())
