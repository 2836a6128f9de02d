"""Memory and disk: how much a run needs, how much there is, and words for both.

:func:`training_memory` estimates, from the sizes alone and before anything is allocated, the
memory a training run takes (float32 everywhere):

* weights, their gradients (dense, and a clipped copy), and the optimizer's slots (Adam: two);
* the activations kept for backpropagation: per layer and time step the gate pre-activations
  ``[B, 4H]``, the seven ``[B, H]`` values a BPTT step reads back, the gate gradients ``[B, 4H]``
  and the outputs (about ``17 * B * H`` numbers per layer and step, counted as 28 for the copies
  TensorFlow makes);
* the output layer: logits, softmax and their gradient, three ``[T, B, num_tokens]`` arrays;
* the first layer's input table ``[num_tokens, 4H]`` and its gradient;
* validation scoring, which runs between steps: ``[chunk, num_tokens]`` logits.

:func:`check_training` compares that with the memory available (``MemAvailable`` of
``/proc/meminfo``, a cgroup's limit, ``CHARLM_MEMORY_LIMIT``) and stops with one line naming the
estimate, what is there and the flag to lower.  A tensor of 2**31 elements or more is refused
too: TensorFlow indexes many kernels with 32-bit integers.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from charlm.errors import CharlmError

FLOAT = 4                       # bytes per float32
MAX_ELEMENTS = 2**31 - 1        # the largest tensor charlm builds
# numbers kept per layer, time step, batch row and hidden unit: 17 by count (see above); measured
# peaks here were 1.2-2.5x the estimate with 17, so room is made for the framework's own copies
ACTIVATIONS_PER_UNIT = 28
MAX_STEPS_PER_CALL = 100        # steps of one compiled training call (batches made in one go; charlm.training.trainer)


def format_bytes(n: float) -> str:
    """``1.5 GB``, ``640 KB``: decimal units, three significant figures at most."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"        # not reached


def free_disk(path) -> str:
    """Free space on the filesystem of ``path`` (or its nearest existing parent), in words."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return f"{format_bytes(shutil.disk_usage(path).free)} free"
    except OSError:
        return "free space unknown"


@dataclass
class Part:
    name: str
    bytes: int
    flags: str                  # what to lower to shrink it


@dataclass
class Estimate:
    parts: list
    largest_tensor: tuple       # (elements, what, flags to lower)

    @property
    def total(self) -> int:
        return sum(p.bytes for p in self.parts)

    def biggest(self) -> Part:
        return max(self.parts, key=lambda p: p.bytes)


def _pick(options):
    """The flag(s) of the largest of ``(size, flags)`` options."""
    return max(options)[1]


def training_memory(num_tokens: int, hidden: int, layers: int, embedding_size: int, batch_size: int,
                    unrollings: int, optimizer: str = "sgd", valid_tokens: int = 0,
                    score_chunk: int = 4096, replicas: int = 1, kind: str = "char") -> Estimate:
    """What training the model of these sizes needs (Python integers: no size overflows)."""
    n, h, L, e, b, t = num_tokens, hidden, layers, embedding_size, batch_size, unrollings
    in0 = e if e else n
    emb = n * e
    first_kernel = (in0 + h) * 4 * h + 4 * h
    deeper = (L - 1) * (8 * h * h + 4 * h)
    out = h * n + n
    params = emb + first_kernel + deeper + out
    copies = 3 + (2 if optimizer == "adam" else 0)      # weights, gradient, clipped gradient, slots
    weight_flag = _pick([(emb + e * 4 * h, "--embedding-size"),
                         ((in0 - e) * 4 * h + deeper + 4 * h * h, "--hidden or --layers"), (out, "--hidden")])
    chunk = min(score_chunk, 1 << max(0, (valid_tokens - 1).bit_length())) if valid_tokens else 0
    token_flag = "--batch-size or --unrollings" + (
        f" (or use --model char: this text makes {num_tokens:,} bigram tokens)" if kind == "bigram" and n > 20_000 else "")
    training = [
        Part("weights, gradients and optimizer slots", copies * params * FLOAT * replicas, weight_flag),
        Part("activations kept for backpropagation", ACTIVATIONS_PER_UNIT * t * b * h * L * FLOAT,
             "--batch-size, --unrollings or --hidden"),
        Part("output logits and their gradient", 3 * t * b * n * FLOAT, token_flag),
        Part("input table", 2 * n * 4 * h * FLOAT, "--hidden"),
        Part("carried state and batches", (4 * L * b * h + MAX_STEPS_PER_CALL * (t + 1) * b * 3) * FLOAT,
             "--batch-size"),
    ]
    scoring = Part("validation scoring", 3 * chunk * n * FLOAT + chunk * 4 * h * L * 8 * FLOAT, "--valid-size")
    # scoring runs between training steps: the larger of the two transient needs counts
    transient = sum(p.bytes for p in training[1:])
    parts = training if transient >= scoring.bytes else [training[0], scoring]
    tensors = [(t * b * n, "output logits [unrollings x batch x tokens]", token_flag),
               (emb, "embedding", "--embedding-size"), (first_kernel, "first LSTM kernel", "--embedding-size" if e > h else "--hidden"),
               (out, "output weights", "--hidden"), (n * 4 * h, "input table", "--hidden"),
               (t * b * 4 * h, "gate activations [unrollings x batch x 4 hidden]",
                "--batch-size, --unrollings or --hidden"),
               (chunk * n, "validation logits", "--valid-size")]
    return Estimate(parts, max(tensors))


def available_memory() -> tuple[int | None, str]:
    """``(bytes, where from)``: the least of MemAvailable, a cgroup limit and CHARLM_MEMORY_LIMIT."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "available memory"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = open(limit_file).read().strip()
            if limit != "max" and int(limit) < 1 << 60:
                found.append((int(limit) - int(open(usage_file).read().strip()), "left under the cgroup's limit"))
        except (OSError, ValueError):
            pass
    value = os.environ.get("CHARLM_MEMORY_LIMIT", "").strip()
    if value:
        try:
            found.append((int(float(value)), "CHARLM_MEMORY_LIMIT"))
        except ValueError:
            raise CharlmError(f"CHARLM_MEMORY_LIMIT must be a number of bytes (got {value!r})")
    gpu = _gpu_free()
    if gpu is not None:
        found.append((gpu, "free GPU memory"))
    return min(found) if found else (None, "unknown")


def _gpu_free() -> int | None:
    """Free memory of the first GPU TensorFlow sees (via nvidia-smi), or None."""
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.config.list_physical_devices("GPU") or not shutil.which("nvidia-smi"):
        return None
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return int(out[0]) * 2**20
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def check(estimate: Estimate, what: str = "training this model"):
    """Stop with one line when ``estimate`` cannot fit (or a tensor is too large to index)."""
    elements, name, flags = estimate.largest_tensor
    biggest = estimate.biggest()
    available, source = available_memory()
    if available is not None and estimate.total > available:
        raise CharlmError(f"{what} needs about {format_bytes(estimate.total)} of memory ({biggest.name}: "
                          f"{format_bytes(biggest.bytes)}) but {format_bytes(max(available, 0))} is there "
                          f"({source}); lower {biggest.flags}")
    if elements > MAX_ELEMENTS:
        raise CharlmError(f"{what} needs a tensor of {elements:,} elements ({name}), more than TensorFlow's "
                          f"2**31 - 1; lower {flags}")


def check_training(model_cfg, train_cfg, num_tokens: int, valid_tokens: int, replicas: int = 1) -> Estimate:
    estimate = training_memory(num_tokens, model_cfg.hidden, model_cfg.layers, model_cfg.embedding_size,
                               train_cfg.batch_size, train_cfg.unrollings, train_cfg.optimizer,
                               valid_tokens, replicas=replicas, kind=model_cfg.kind)
    check(estimate)
    return estimate


def check_sampling(num_tokens: int, hidden: int, layers: int, num_samples: int, steps: int):
    """Sampling keeps ``[num_samples, num_tokens]`` logits and ``[steps, num_samples]`` tokens."""
    logits = num_samples * max(num_tokens, 4 * hidden) * 4 * FLOAT
    state = num_samples * hidden * layers * 4 * FLOAT
    tokens = steps * num_samples * FLOAT
    parts = [Part("logits of every sample", logits + state, "--num-samples"),
             Part("generated tokens", tokens, "--length or --num-samples")]
    largest = max((num_samples * num_tokens, "logits [samples x tokens]", "--num-samples"),
                  (steps * num_samples, "generated tokens [length x samples]", "--length or --num-samples"))
    check(Estimate(parts, largest), "sampling")
