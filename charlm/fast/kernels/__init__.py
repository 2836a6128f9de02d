"""charlm's own TensorFlow kernels: the elementwise halves of an LSTM step as one CPU op each.

The long-window training loop (:mod:`charlm.fast.lstm_loops`) runs each step as a matmul
(TensorFlow's, oneDNN) and one op of ``lstm_steps.cc`` (Eigen's vectorised tanh and logistic,
shared out to TensorFlow's CPU threads), forward and backward, in a feature-major layout whose
matmul runs fastest here, in float32 or with bfloat16 matmuls.  Without them each step is ~10
small TensorFlow ops forward and the fused ``LSTMBlockCellGrad`` backward, in the row-major
layout those ops need.

The ops are compiled from source on first use with the C++ compiler (``$CXX``, else ``g++``)
against the installed TensorFlow's headers (``tf.sysconfig``), ~15 s once, into
``$XDG_CACHE_HOME/charlm/ops`` under a name keyed by the source, TensorFlow's version and flags,
and the CPU's instruction-set flags (it is built for the machine it runs on).  They are used
only for float32 models with no GPU visible.  ``CHARLM_CUSTOM_OPS=off`` turns them off; without a
compiler, or if the build or load fails, charlm computes the same steps with plain TensorFlow ops
(one line on stderr says so).
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from charlm.runtime import cache_home

SOURCE = Path(__file__).with_name("lstm_steps.cc")
OFF_VALUES = ("0", "off", "no", "false", "none")


def enabled() -> bool:
    return os.environ.get("CHARLM_CUSTOM_OPS", "on").strip().lower() not in OFF_VALUES


def cache_dir() -> Path:
    return Path(cache_home()) / "ops"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _say(message: str):
    print(f"charlm: {message}", file=sys.stderr, flush=True)


def _native_exceptions(cxx: str) -> list[str]:
    """Instruction sets to leave out of ``-march=native``: TensorFlow's bundled Eigen does not
    compile with AVX512-FP16 on (Sapphire Rapids and later), so it is turned off where the
    compiler knows the flag.  The kernel uses float32 only and loses nothing by it."""
    probe = subprocess.run([cxx, "-mno-avx512fp16", "-E", "-x", "c++", os.devnull],
                           capture_output=True, text=True)
    return ["-mno-avx512fp16"] if probe.returncode == 0 else []


def build(target_dir: Path | None = None) -> Path:
    """Compile ``lstm_steps.cc`` (if not already in the cache) and return the library's path.

    Raises ``RuntimeError`` with the compiler's last lines if it cannot be built.
    """
    import tensorflow as tf

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler ($CXX, g++ or c++)")
    flags = ["-std=c++17", "-shared", "-fPIC", "-O3", "-march=native", *_native_exceptions(cxx),
             *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), tf.__version__, cxx, *flags, _cpu_flags()])
                         .encode()).hexdigest()[:16]
    target_dir = target_dir or cache_dir()
    target = target_dir / f"lstm_steps-{key}.so"
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    _say(f"building the LSTM step kernels once (~15 s): {target}")
    fd, tmp = tempfile.mkstemp(prefix=".lstm_steps-", suffix=".so", dir=target_dir)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, str(SOURCE), "-o", tmp, *flags], capture_output=True, text=True)
        if proc.returncode:
            lines = [l for l in proc.stderr.splitlines() if "error" in l.lower()] or proc.stderr.splitlines()
            raise RuntimeError(f"{cxx} failed: {' | '.join(lines[-3:])}")
        os.replace(tmp, target)       # atomic: a concurrent build or reader sees all or nothing
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=None)
def _library():
    import tensorflow as tf

    try:
        return tf.load_op_library(str(build()))
    except Exception as e:  # noqa: BLE001 - any failure means: use the plain ops
        _say(f"LSTM step kernels unavailable ({e}); using plain TensorFlow ops")
        return None


def lstm_steps():
    """The loaded kernel library (ops ``charlm_lstm_forward``, ``charlm_lstm_backward``), or ``None``.

    ``None`` when turned off, when a GPU is visible (the ops are CPU-only), or when it cannot be
    built or loaded.
    """
    import tensorflow as tf

    if not enabled() or tf.config.list_logical_devices("GPU"):
        return None
    return _library()
