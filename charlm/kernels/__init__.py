"""charlm's own TensorFlow kernel: the elementwise half of an LSTM step as one CPU op.

On this project's 2-core CPU the long-window training loop spent ~40% of its forward pass in the
~10 small TensorFlow ops of each step's gate activations (each a separate dispatch over a
``[64, 512]`` tensor).  ``cell_forward.cc`` does them in one op (Eigen's vectorised tanh and
logistic over rows shared out to TensorFlow's CPU threads); the matmul stays TensorFlow's (oneDNN)
and the backward pass TensorFlow's fused ``LSTMBlockCellGrad``.

The op is compiled from source on first use with the C++ compiler (``$CXX``, else ``g++``)
against the installed TensorFlow's headers (``tf.sysconfig``), ~10 s once, into
``$XDG_CACHE_HOME/charlm/ops`` under a name keyed by the source, TensorFlow's version and flags,
and the CPU's instruction-set flags (it is built for the machine it runs on).  It is used only
for float32 with no GPU visible.  ``CHARLM_CUSTOM_OPS=off`` turns it off; without a compiler, or
if the build or load fails, charlm computes the same cell with plain TensorFlow ops (one line on
stderr says so).
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

SOURCE = Path(__file__).with_name("cell_forward.cc")
OFF_VALUES = ("0", "off", "no", "false", "none")


def enabled() -> bool:
    return os.environ.get("CHARLM_CUSTOM_OPS", "on").strip().lower() not in OFF_VALUES


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charlm" / "ops"


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


def build(target_dir: Path | None = None) -> Path:
    """Compile ``cell_forward.cc`` (if not already in the cache) and return the library's path.

    Raises ``RuntimeError`` with the compiler's last lines if it cannot be built.
    """
    import tensorflow as tf

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler ($CXX, g++ or c++)")
    flags = ["-std=c++17", "-shared", "-fPIC", "-O3", "-march=native",
             *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), tf.__version__, cxx, *flags, _cpu_flags()])
                         .encode()).hexdigest()[:16]
    target_dir = target_dir or cache_dir()
    target = target_dir / f"cell_forward-{key}.so"
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    _say(f"building the fused LSTM cell kernel once (~10 s): {target}")
    fd, tmp = tempfile.mkstemp(prefix=".cell_forward-", suffix=".so", dir=target_dir)
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
        _say(f"fused LSTM cell kernel unavailable ({e}); using plain TensorFlow ops")
        return None


def cell_forward():
    """``fn(z, c) -> (h, c_new, (i, g, f, o, tanh c_new))`` backed by the fused op, or ``None``.

    ``None`` when turned off, when a GPU is visible (the op is CPU-only), or when it cannot be
    built or loaded.
    """
    import tensorflow as tf

    if not enabled() or tf.config.list_logical_devices("GPU"):
        return None
    library = _library()
    if library is None:
        return None

    def fn(z, c):
        h, c_new, i, g, f, o, tc = library.charlm_cell_forward(z, c)
        return h, c_new, (i, g, f, o, tc)

    return fn

