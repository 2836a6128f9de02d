"""The matmuls' number format: ``--precision auto|float32|bfloat16``.

bfloat16 keeps float32's exponent range with an 8-bit mantissa.  With it, charlm runs its
matmuls (the recurrent product, the weight gradient, the input and output projections) on
bfloat16 inputs, while weights, optimizer slots, cell state, activations and the loss stay
float32, and checkpoints are float32 whatever the setting.  CPUs with AMX or AVX512_BF16 (and
GPUs from compute capability 8.0) multiply bfloat16 several times faster than float32; elsewhere
bfloat16 is emulated and slower, so ``auto`` picks it only where the hardware has it, and only
for models whose matmuls dominate their time: ``MIN_HIDDEN`` units or more, trained outside XLA
(the small short-window models XLA compiles are bound by latency, not by matmuls).
"""
from __future__ import annotations

import functools

PRECISIONS = ("auto", "float32", "bfloat16")
CPU_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512_BF16"}
MIN_HIDDEN = 256


@functools.lru_cache(maxsize=None)
def bfloat16_hardware() -> str | None:
    """What multiplies bfloat16 natively here (``"GPU"``, ``"AMX"``, ``"AVX512_BF16"``), or None."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        major = (tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))[0]
        if major >= 8:
            return "GPU"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return next((name for flag, name in CPU_FLAGS.items() if flag in flags), None)


def compute_dtype(precision: str, hidden: int = MIN_HIDDEN, compiled_with_xla: bool = False):
    """The matmuls' dtype for ``precision`` and a model of ``hidden`` units: ``(tf.DType, why)``."""
    import tensorflow as tf

    if precision == "float32":
        return tf.float32, "asked"
    if precision == "bfloat16":
        return tf.bfloat16, "asked"
    hardware = bfloat16_hardware()
    if hardware is None:
        return tf.float32, "no bfloat16 hardware"
    if compiled_with_xla or hidden < MIN_HIDDEN:
        return tf.float32, "small model"
    return tf.bfloat16, hardware
