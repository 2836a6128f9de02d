"""Opening a run folder for writing: one writer at a time, and never over what a user had.

:func:`check_new_folder` refuses, before anything slow is done, a folder that is a file or holds
anything (a lock file left by a run is no content).  :func:`writing` then holds the folder for the
run: it takes the :class:`~charlm.run.checkpoint.RunLock`, refuses a used folder again (now that no
other run can start in it), and on the way out releases the lock and removes what a new run that
wrote nothing left (the folder it made, or the lock file it added).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from charlm.errors import CharlmError
from charlm.run import checkpoint as ckpt


def refuse_a_used_folder(run_dir: Path, chief: bool = True, probe: bool = True):
    """A new run starts only in a missing or empty folder (a lock file left by a run is no content)."""
    run_dir = Path(run_dir)
    if chief and run_dir.is_dir() and any(p.name != ckpt.LOCK_FILE for p in run_dir.iterdir()):
        if probe:
            ckpt.RunLock(run_dir).refuse_if_held()     # a run training in it: name that process
        what = "a charlm run" if (run_dir / ckpt.CONFIG_FILE).exists() else "other files"
        raise CharlmError(f"{run_dir} already holds {what}; pass --resume to continue it, "
                          f"or choose another --checkpoint-dir (nothing was changed)")


def check_new_folder(run_dir: Path, chief: bool = True):
    """The folder a new run is asked to write: missing, or an empty directory."""
    run_dir = Path(run_dir)
    if chief and run_dir.exists() and not run_dir.is_dir():
        raise CharlmError(f"--checkpoint-dir {run_dir} is a file, not a directory")
    refuse_a_used_folder(run_dir, chief)


@contextlib.contextmanager
def writing(run_dir: Path, new: bool, chief: bool = True):
    """Hold ``run_dir`` for one run (only the chief of a distributed run takes the lock)."""
    run_dir = Path(run_dir)
    created = chief and not run_dir.exists()
    lock = None
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = ckpt.RunLock(run_dir).acquire()
    try:
        if new:
            refuse_a_used_folder(run_dir, chief, probe=False)   # again, now that no other run can start
        yield run_dir
    finally:
        if lock:
            lock.release()
        # a new run that wrote nothing leaves nothing
        if created and {p.name for p in run_dir.iterdir()} <= {ckpt.LOCK_FILE}:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif lock and not lock.existed and [p.name for p in run_dir.iterdir()] == [ckpt.LOCK_FILE]:
            lock.path.unlink(missing_ok=True)
