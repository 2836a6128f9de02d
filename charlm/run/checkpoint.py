"""The run folder: everything ``sample``, ``eval`` and ``export`` need, and nothing else.

::

    <run>/config.json     model + training configuration, vocabulary (and a sparse bigram
                          model's pair list), corpus spec
    <run>/ckpt/           tf.train.Checkpoint files (CheckpointManager keeps the last few)
    <run>/best/           with --keep-best: the checkpoint of the lowest validation loss so far,
                          and best.json (its step and loss)
    <run>/metrics.jsonl   one JSON object per logging step
    <run>/logs/           TensorBoard event files
    <run>/train.lock      held (flock) by the one ``train`` writing the folder; see charlm.run.folder.RunLock

``config.json`` is written to a temporary file and renamed into place; TensorFlow writes the
checkpoint files before it updates the ``checkpoint`` index, so an interrupted save leaves the
previous checkpoint loadable.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import time
from pathlib import Path

from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CharlmError
from charlm.data.vocab import Tokenizer, Vocabulary

CONFIG_FILE = "config.json"
CKPT_DIR = "ckpt"
BEST_DIR = "best"
BEST_FILE = "best.json"
METRICS_FILE = "metrics.jsonl"
LOG_DIR = "logs"
LOCK_FILE = "train.lock"
READ_ATTEMPTS = 5
FORMAT_VERSION = 1
DEFAULT_ROOT = "checkpoints"


def atomic_write_text(path: Path, text: str):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_run_config(run_dir: Path, model: ModelConfig, train: TrainConfig, vocab: Vocabulary,
                     extra: dict | None = None, tokenizer: Tokenizer | None = None):
    data = {
        "format": FORMAT_VERSION,
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "vocab": vocab.to_dict(),
        **(extra or {}),
    }
    if tokenizer is not None and tokenizer.to_dict():     # a sparse bigram model's pair list
        data["tokens"] = tokenizer.to_dict()
    _write_config(run_dir, data)


def update_run_config(run_dir: Path, model: ModelConfig, train: TrainConfig):
    """Rewrite the run's ``config.json`` with new model and training settings (the rest kept)."""
    data = json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    data.update(model=dataclasses.asdict(model), train=dataclasses.asdict(train))
    _write_config(run_dir, data)


def _write_config(run_dir: Path, data: dict):
    path = Path(run_dir) / CONFIG_FILE
    try:
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise CharlmError(f"cannot write {path}: {write_failure(run_dir, e)}")


def read_run_config(run_dir) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CharlmError(f"checkpoint directory not found: {run_dir}")
    if not run_dir.is_dir():
        raise CharlmError(f"checkpoint path is not a directory: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise CharlmError(f"{run_dir} is not a charlm run (no {CONFIG_FILE}); train one with `python cli.py train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["model_config"] = ModelConfig(**data["model"]).validate()
        data["train_config"] = TrainConfig(**data["train"])
        data["vocabulary"] = Vocabulary.from_dict(data["vocab"])
        data["tokenizer"] = Tokenizer.from_dict(data["model_config"].kind, data["vocabulary"],
                                                data.get("tokens", {}))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, CharlmError) as e:
        raise CharlmError(f"{path} is corrupt or from an incompatible version ({type(e).__name__}: {e})")
    return data


def _newest_saved(ckpt_dir: Path) -> str | None:
    """The prefix the ``checkpoint`` index names, once its files exist.

    TensorFlow rewrites that small index in place, so a reader can meet it half written (seen
    here: ``all_mo``); such a read is retried a moment later instead of being taken for "no
    checkpoint" with a parse warning.
    """
    import tensorflow as tf

    for _ in range(20):
        try:
            text = (ckpt_dir / "checkpoint").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            text = ""
        found = re.search(r'^model_checkpoint_path: "([^"\n]+)"$', text, re.M)
        if found:
            path = Path(found.group(1))
            path = path if path.is_absolute() else ckpt_dir / path
            if Path(f"{path}.index").exists():
                return str(path)
        time.sleep(0.05)
    return tf.train.latest_checkpoint(str(ckpt_dir))


def latest_checkpoint(run_dir, best: bool = False) -> str:
    """Path prefix of the newest weights in ``run_dir`` (``best``: of its ``best/``), or a clear error."""
    if best:
        path = _newest_saved(Path(run_dir) / BEST_DIR)
        if path is None:
            raise CharlmError(f"--best: {run_dir} has no best checkpoint (no {BEST_DIR}/; "
                              f"train with --keep-best to keep one)")
        return path
    path = _newest_saved(Path(run_dir) / CKPT_DIR)
    if path is None:
        raise CharlmError(f"{run_dir} holds no saved weights yet (no checkpoint in {Path(run_dir) / CKPT_DIR})")
    return path


def read_best(run_dir) -> dict | None:
    """``best/best.json`` (``step``, ``valid_loss``), or None before the first best checkpoint."""
    path = Path(run_dir) / BEST_DIR / BEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CharlmError(f"{path} is corrupt ({type(e).__name__}: {e}); remove {path.parent} to start it afresh")


def write_best(run_dir, step: int, valid_loss: float):
    atomic_write_text(Path(run_dir) / BEST_DIR / BEST_FILE,
                      json.dumps({"step": step, "valid_loss": valid_loss}) + "\n")


def load_model(run_dir, dtype=None, best: bool = False):
    """Rebuild the model of a run folder with its newest weights (``best``: the weights of its
    lowest validation loss, ``best/``): ``(model, tokenizer, info)``.

    Needs no lock: a training run may be writing the folder.  The ``checkpoint`` index names a
    checkpoint only once its files are complete, but CheckpointManager deletes old ones; a reader
    that loses that race (its checkpoint vanished under it) retries with the newest one.
    """
    import tensorflow as tf

    from charlm.nn.model import CharLM

    info = read_run_config(run_dir)
    tokenizer = info["tokenizer"]
    model = CharLM(info["model_config"], tokenizer.num_tokens, dtype=dtype or tf.float32)
    path = latest_checkpoint(run_dir, best)
    for attempt in range(READ_ATTEMPTS):
        try:
            status = tf.train.Checkpoint(model=model).restore(path)
            status.expect_partial()
            status.assert_existing_objects_matched()
            break
        except Exception as e:  # noqa: BLE001 - a damaged file surfaces as many error types
            newer = latest_checkpoint(run_dir, best)
            if newer != path and attempt + 1 < READ_ATTEMPTS:
                path = newer                    # deleted by a training run while read: take the newest
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CharlmError(f"cannot load the weights in {path}: corrupt or incomplete checkpoint ({first[:200]})")
    info["checkpoint_path"] = path
    return model, tokenizer, info


def find_latest_run(root=DEFAULT_ROOT) -> Path:
    """The run under ``root`` whose config was written most recently."""
    root = Path(root)
    runs = sorted(root.glob(f"*/{CONFIG_FILE}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not runs:
        raise CharlmError(f"no trained runs under {root}/; train one with `python cli.py train` "
                          f"or pass --checkpoint DIR")
    return runs[-1].parent


def default_run_dir(preset: str, kind: str, root=DEFAULT_ROOT) -> Path:
    return Path(root) / f"{preset}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def append_metrics(run_dir, record: dict):
    """One JSON line; a write that fails (a full disk) is cut back off, so no half line is left."""
    data = (json.dumps(record) + "\n").encode("utf-8")
    with open(Path(run_dir) / METRICS_FILE, "ab", buffering=0) as f:
        start = os.fstat(f.fileno()).st_size
        try:
            while data:
                data = data[f.write(data):]
        except OSError:
            f.truncate(start)
            raise


def write_failure(folder, error: BaseException) -> str:
    """``No space left on device, 0 B free``: why a write into ``folder`` failed, and the room left."""
    from charlm.run.resources import free_disk

    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    else:       # TensorFlow: "{{function_node ...}} <file>; No space left on device [Op:SaveV2]"
        text = (str(getattr(error, "message", error)).strip().splitlines() or [type(error).__name__])[0]
        reason = text.rsplit("; ", 1)[-1].split(" [Op:")[0].strip()[:120]
    return f"{reason}, {free_disk(folder)}"


def remove_partial_checkpoint(ckpt_dir, step: int):
    """After a failed save of ``ckpt-<step>``: delete what it left (its ``_temp`` folder, files of
    that number the ``checkpoint`` index does not name, the index's own temporary file)."""
    import shutil

    import tensorflow as tf

    ckpt_dir = Path(ckpt_dir)
    latest = tf.train.latest_checkpoint(str(ckpt_dir))
    saved = latest is not None and Path(latest).name == f"ckpt-{step}"
    for path in ckpt_dir.glob(f"ckpt-{step}*"):
        if path.name == f"ckpt-{step}_temp" and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif not saved and path.name.split(".")[0] == f"ckpt-{step}":
            path.unlink(missing_ok=True)
    for path in ckpt_dir.glob("checkpoint.tmp*"):
        path.unlink(missing_ok=True)
    return tf.train.latest_checkpoint(str(ckpt_dir))


def save(manager, run_dir, step: int):
    """``manager.save`` of step ``step`` into its folder (``<run_dir>/ckpt``, or ``best``).  A
    failed write (a full disk) removes what it left and ends in one line naming the last good
    checkpoint."""
    import tensorflow as tf

    try:
        manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
        folder = Path(manager.directory)
        good = remove_partial_checkpoint(folder, step)
        last = (f"the last good checkpoint is {good}, continue from it with --resume once there is room"
                if good else "there is no earlier checkpoint")
        raise CharlmError(f"cannot save the checkpoint of step {step} in {folder} "
                          f"({write_failure(folder, e)}); its half-written files were removed; {last}")
