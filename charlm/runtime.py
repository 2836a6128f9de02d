"""Process-wide TensorFlow settings, applied before TensorFlow runs its first op.

On a 2-core CPU the ud730-sized model is latency bound: its 64x256 matmuls finish faster on
one thread than split across two (measured: ~480 vs ~375 training steps/s), while a 512-unit
model wants every core.  XLA's older CPU runtime also dispatches these small kernels faster
than the default one in TensorFlow 2.21 (~580 vs ~480 steps/s).  GPUs are untouched.
"""
from __future__ import annotations

import os

LEGACY_XLA_FLAG = "--xla_cpu_use_thunk_runtime=false"


def cache_home() -> str:
    """charlm's cache folder: ``$XDG_CACHE_HOME/charlm``, else ``~/.cache/charlm``."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "charlm")


def xla_cache_dir() -> str | None:
    """Where compiled XLA programs are kept between runs (``CHARLM_XLA_CACHE``; ``off`` disables).

    Compiling the ud730 training block takes ~4-5 s of every run on this CPU; with the cache a
    second run with the same shapes loads it instead (measured: 100 steps, 16.96 s -> 11.11 s
    whole process).  An entry is ~1.3 MB.  Default: ``$XDG_CACHE_HOME/charlm/xla``.
    """
    value = os.environ.get("CHARLM_XLA_CACHE")
    if value is not None and value.strip().lower() in ("", "0", "off", "none", "no"):
        return None
    if value:
        return value
    return os.path.join(cache_home(), "xla")


def xla_allowed() -> bool:
    """False when ``CHARLM_XLA=off``: training then never compiles with XLA, even the small
    models and short windows charlm compiles by default (``trainer.use_xla``).  Compiling costs
    ~5 s at the start of every run (in a process that trains several models it is paid for each:
    the persistent cache only helps a new process); without it a tiny model's 100 steps take
    1.6 s instead of 6.3, a ud730 model steps about half as fast.  Any other value: the default."""
    value = os.environ.get("CHARLM_XLA", "").strip().lower()
    if value in ("off", "0", "no", "false"):
        return False
    if value in ("", "auto", "on", "1", "yes", "true"):
        return True
    from charlm.errors import CharlmError

    raise CharlmError(f"CHARLM_XLA={value!r}: use 'off' (never compile training with XLA) or 'auto'")


def prepare_environment():
    """Environment for TensorFlow; call before importing it (the CLI does).

    TensorFlow's C++ log is kept to FATAL (``TF_CPP_MIN_LOG_LEVEL=3``; set it yourself to see
    more): loading a cached XLA program logs several screen-wide ERROR lines on every warm run
    (a text-format parse attempt, and ``+prefer-no-gather`` tuning flags read as missing CPU
    features) although the program loads and computes the same.  Real failures still reach the
    user, as exceptions that charlm turns into one ``Error:`` line.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_thunk_runtime" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {LEGACY_XLA_FLAG}".strip()
    tf_flags = os.environ.get("TF_XLA_FLAGS", "")
    cache = xla_cache_dir()
    if cache and "tf_xla_persistent_cache_directory" not in tf_flags:
        try:
            os.makedirs(cache, exist_ok=True)
        except OSError:           # an unwritable cache only costs the compile time it would save
            return
        os.environ["TF_XLA_FLAGS"] = f"{tf_flags} --tf_xla_persistent_cache_directory={cache}".strip()


def import_tensorflow_quietly():
    """Import TensorFlow and find its devices with its start-up chatter kept off stderr.

    TensorFlow 2.21 prints oneDNN/CUDA notices before its logging is configured, whatever
    TF_CPP_MIN_LOG_LEVEL says; a user of the CLI should see charlm's own lines only.  A failing
    import restores stderr first, so its error is still shown.
    """
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    prepare_environment()
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf


def auto_threads(hidden: int) -> int:
    """0 (TensorFlow's default: all cores) for big models, 1 for small ones."""
    return 1 if hidden <= 128 else 0


def set_threads(threads: int, concurrent: int = 1) -> bool:
    """Use ``threads`` CPU threads per op (0: TensorFlow's default).  False if too late to change.

    ``concurrent`` independent op streams (replicas on logical CPU devices) each get a thread.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(threads, concurrent) if threads else 0)
        return True
    except RuntimeError:          # TensorFlow already initialised in this process
        return False


def threads_kept_note(asked: int) -> str:
    """The line for a --threads that came too late: TensorFlow already ran ops in this process
    (charlm called in-process after other TensorFlow work), so it keeps the count it has."""
    import tensorflow as tf

    kept = tf.config.threading.get_intra_op_parallelism_threads()
    return (f"--threads {asked}: TensorFlow already runs in this process and keeps "
            f"{kept or 'all'} thread(s) per op (a new process takes --threads)")
