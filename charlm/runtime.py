"""Process-wide TensorFlow settings, applied before TensorFlow runs its first op.

On a 2-core CPU the ud730-sized model is latency bound: its 64x256 matmuls finish faster on
one thread than split across two (measured: ~480 vs ~375 training steps/s), while a 512-unit
model wants every core.  XLA's older CPU runtime also dispatches these small kernels faster
than the default one in TensorFlow 2.21 (~580 vs ~480 steps/s).  GPUs are untouched.
"""
from __future__ import annotations

import os

LEGACY_XLA_FLAG = "--xla_cpu_use_thunk_runtime=false"


def prepare_environment():
    """Environment for TensorFlow; call before importing it (the CLI does)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_thunk_runtime" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {LEGACY_XLA_FLAG}".strip()


def auto_threads(hidden: int) -> int:
    """0 (TensorFlow's default: all cores) for big models, 1 for small ones."""
    return 1 if hidden <= 128 else 0


def set_threads(threads: int) -> bool:
    """Use ``threads`` CPU threads per op (0: TensorFlow's default).  False if too late to change."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads if threads else 0)
        return True
    except RuntimeError:          # TensorFlow already initialised in this process
        return False
