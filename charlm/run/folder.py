"""Opening a run folder for writing: one writer at a time, and never over what a user had.

:func:`check_new_folder` refuses, before anything slow is done, a folder that is a file or holds
anything (a lock file left by a run is no content).  :func:`writing` then holds the folder for the
run: it takes the :class:`RunLock`, refuses a used folder again (now that no
other run can start in it), and on the way out releases the lock and removes what a new run that
wrote nothing left (the folder it made, or the lock file it added).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from charlm.errors import CharlmError
from charlm.run import checkpoint as ckpt


class RunLock:
    """``train``'s hold on its run folder: an exclusive ``flock`` on ``<run>/train.lock``.

    The file names the holder (PID, host, start time) for the message a second writer gets.  The
    kernel releases an flock when its process ends in any way (SIGKILL included), so a stale file
    never blocks; the file itself stays (removing it would race with the next taker).  Readers
    (``sample``, ``eval``, ``export``) take no lock.  flock is local to one machine; on a network
    filesystem it may not exclude a writer on another host.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / ckpt.LOCK_FILE
        self.fd = None

    def acquire(self) -> "RunLock":
        import fcntl
        import socket

        self.existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.refuse_if_held()
            raise CharlmError(f"{self.path.parent} is being trained by another process; wait for it to end "
                              f"or stop it first (nothing was changed)")
        try:                # who holds it; a full disk must not stop the run from starting
            os.ftruncate(fd, 0)
            os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, "
                         f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        except OSError:
            pass
        self.fd = fd
        return self

    def refuse_if_held(self):
        """Stop with one line naming the holder when a training process holds the lock (the file,
        if any, is only read: a probe changes nothing)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "a process that is just starting"
            raise CharlmError(f"{self.path.parent} is being trained by another process ({holder}); "
                              f"wait for it to end or stop it first (nothing was changed)")
        finally:
            os.close(fd)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)           # closing the descriptor drops the flock
            self.fd = None


def refuse_a_used_folder(run_dir: Path, chief: bool = True, probe: bool = True):
    """A new run starts only in a missing or empty folder (a lock file left by a run is no content)."""
    run_dir = Path(run_dir)
    if chief and run_dir.is_dir() and any(p.name != ckpt.LOCK_FILE for p in run_dir.iterdir()):
        if probe:
            RunLock(run_dir).refuse_if_held()     # a run training in it: name that process
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
    # the folders this run makes, the run folder first, then the parents it lacked
    made = [p for p in (run_dir, *run_dir.absolute().parents) if not p.exists()] if chief else []
    created = bool(made)
    lock = None
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
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
            for parent in made[1:]:
                try:
                    parent.rmdir()          # only while empty: another run may have begun in it
                except OSError:
                    break
        elif lock and not lock.existed and [p.name for p in run_dir.iterdir()] == [ckpt.LOCK_FILE]:
            lock.path.unlink(missing_ok=True)
