"""A mirror run's folder: its ``config.json`` (the settings and the vocabulary) and its checkpoints.

The rest of the folder is the language model's (``charlm.run.checkpoint``): ``ckpt/``,
``metrics.jsonl``, ``logs/`` and the writer's ``train.lock``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from charlm.data.vocab import Vocabulary
from charlm.errors import CharlmError
from charlm.mirror.config import MirrorConfig
from charlm.run import checkpoint as ckpt

TASK = "mirror"
FORMAT_VERSION = 1


def write_mirror_config(run_dir: Path, config: MirrorConfig, vocab: Vocabulary):
    data = {"format": FORMAT_VERSION, "task": TASK, "mirror": dataclasses.asdict(config), "vocab": vocab.to_dict()}
    ckpt.atomic_write_text(Path(run_dir) / ckpt.CONFIG_FILE, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_mirror_config(run_dir) -> dict:
    """``config.json`` of a mirror run: ``{"config": MirrorConfig, "vocabulary": Vocabulary, ...}``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CharlmError(f"checkpoint directory not found: {run_dir}" if not run_dir.exists()
                          else f"checkpoint path is not a directory: {run_dir}")
    path = run_dir / ckpt.CONFIG_FILE
    if not path.exists():
        raise CharlmError(f"{run_dir} is not a charlm run (no {ckpt.CONFIG_FILE}); train one with "
                          f"`python cli.py mirror train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("task") != TASK:
            raise CharlmError(f"{run_dir} is a language-model run, not a mirror run; train one with "
                              f"`python cli.py mirror train`")
        data["config"] = MirrorConfig(**data["mirror"]).validate()
        data["vocabulary"] = Vocabulary.from_dict(data["vocab"])
    except CharlmError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CharlmError(f"{path} is corrupt or from an incompatible version ({type(e).__name__}: {e})")
    return data


def restore(checkpoint, path: str, what: str, consumed: bool = False):
    """Restore ``checkpoint`` from ``path`` (all of it when ``consumed``, else the objects it has),
    or stop with one line: ``{what} {path}: corrupt or incomplete checkpoint (...)``."""
    try:
        status = checkpoint.restore(path)
        if consumed:
            status.assert_consumed()
        else:
            status.expect_partial()
            status.assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - a damaged file surfaces as many error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CharlmError(f"{what} {path}: corrupt or incomplete checkpoint ({first[:200]})")
