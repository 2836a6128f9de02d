"""Data-parallel training on TensorFlow's own engine (``tf.distribute``).

``--distribute mirrored`` makes a ``MirroredStrategy`` over the visible GPUs or, on a machine
without them, over ``--replicas N`` logical CPU devices.  ``--distribute multi-worker`` makes a
``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``; its chief (the ``chief`` task,
or worker 0 when there is none) writes the run folder, the others only train.

Each replica takes a contiguous slice of the BatchGenerator's rows (its own cursors) and the
matching rows of the carried LSTM state, so ``--batch-size`` stays the global batch and a run's
checkpoint is the same as a single-device run's: it resumes on any number of replicas.  The
training step itself lives in :mod:`charlm.training.trainer`.

A strategy must exist before TensorFlow runs its first op; :func:`setup` is called early.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from charlm.errors import CharlmError

MODES = ("none", "mirrored", "multi-worker")
# A worker waiting this long in a collective (a peer died or hangs) fails instead of waiting forever.
DEFAULT_COLLECTIVE_TIMEOUT = 600.0


@dataclass
class Distribution:
    strategy: object                 # a tf.distribute.Strategy
    mode: str
    is_chief: bool = True
    task: str = ""                   # "worker 1", for log lines

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        where = f", {self.task}" if self.task else ""
        return f"{self.mode} over {self.replicas} replica{'s' if self.replicas != 1 else ''}{where}"


def cluster_spec() -> tuple[dict, dict]:
    """``(cluster, task)`` from ``TF_CONFIG``, checked enough to fail with one clear line."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise CharlmError("--distribute multi-worker needs TF_CONFIG describing the cluster and this "
                          "task, e.g. {\"cluster\": {\"worker\": [\"host1:2222\", \"host2:2222\"]}, "
                          "\"task\": {\"type\": \"worker\", \"index\": 0}}")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CharlmError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})")
    cluster, task = config.get("cluster") if isinstance(config, dict) else None, \
        config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise CharlmError("TF_CONFIG must hold a \"cluster\" and a \"task\" object")
    kind, index = task.get("type"), task.get("index", 0)
    members = cluster.get(kind)
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise CharlmError(f"TF_CONFIG: task {kind!r} {index!r} is not in the cluster "
                          f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items() if isinstance(v, list))})")
    if kind not in ("chief", "worker"):
        raise CharlmError(f"TF_CONFIG: charlm runs chief and worker tasks, not {kind!r}")
    return cluster, task


def is_chief_task(cluster: dict, task: dict) -> bool:
    kind, index = task["type"], task.get("index", 0)
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def _logical_cpus(tf, count: int):
    """Split the CPU into ``count`` logical devices (only possible before TensorFlow starts)."""
    cpus = tf.config.list_physical_devices("CPU")
    existing = tf.config.get_logical_device_configuration(cpus[0]) or []
    if len(existing) >= count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        raise CharlmError(f"--replicas {count}: TensorFlow has already started in this process with "
                          f"{max(len(existing), 1)} CPU device(s); start a new process (the CLI does)")


def setup(mode: str | None, replicas: int | None = None, collective_timeout: float | None = None):
    """The ``Distribution`` for ``mode``, or ``None`` for ordinary single-device training."""
    mode = mode or "none"
    if mode not in MODES:
        raise CharlmError(f"--distribute must be one of {', '.join(MODES)}, not {mode!r}")
    if replicas is not None and replicas < 1:
        raise CharlmError(f"--replicas must be at least 1 (got {replicas})")
    if mode == "none":
        if replicas not in (None, 1):
            raise CharlmError("--replicas needs --distribute mirrored")
        return None
    import tensorflow as tf

    if mode == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            count = replicas or len(gpus)
            if count > len(gpus):
                raise CharlmError(f"--replicas {count}: TensorFlow sees only {len(gpus)} GPU(s)")
            devices = [f"/gpu:{i}" for i in range(count)]
        else:
            count = replicas or 1
            _logical_cpus(tf, count)
            devices = [f"/cpu:{i}" for i in range(count)]
        return Distribution(tf.distribute.MirroredStrategy(devices), mode)

    if replicas is not None:
        raise CharlmError("--replicas applies to --distribute mirrored; a multi-worker cluster has "
                          "one replica per worker (or per GPU) as TF_CONFIG describes")
    cluster, task = cluster_spec()
    timeout = collective_timeout
    if timeout is None:
        timeout = float(os.environ.get("CHARLM_COLLECTIVE_TIMEOUT", DEFAULT_COLLECTIVE_TIMEOUT))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (ValueError, tf.errors.OpError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CharlmError(f"--distribute multi-worker: cannot join the cluster in TF_CONFIG ({first[:200]})")
    return Distribution(strategy, mode, is_chief=is_chief_task(cluster, task),
                        task=f"{task['type']} {task.get('index', 0)}")


class ReplicaSteps:
    """The Trainer's block of steps, data-parallel under its ``strategy`` (a mixin of ``Trainer``:
    it reads the model, the carried state and the config, and ends in the Trainer's ``_update``)."""

    def _replica_step(self, batch, seed):
        """One replica's share of a step: its rows of the batch and of the carried state.

        The loss is the replica's summed cross-entropy over the *global* token count, so the
        all-reduced (summed) gradient is exactly the single-device gradient of the global batch.
        """
        ctx = tf.distribute.get_replica_context()
        rows = self.cfg.batch_size // ctx.num_replicas_in_sync
        first = ctx.replica_id_in_sync_group * rows
        local = batch[:, first:first + rows]
        state = [(h[first:first + rows], c[first:first + rows]) for h, c in self.carried]
        if self.model_cfg.drops:
            seed = tf.random.experimental.stateless_fold_in(seed, ctx.replica_id_in_sync_group)
        else:
            seed = None
        count = float(self.cfg.batch_size * self.cfg.unrollings)
        with tf.GradientTape() as tape:
            top, new_state = self.model.features(local[:-1], state, seed)
            loss = self.model.softmax.total(top, local[1:]) / count
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.variables)]
        loss, grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (loss, grads))
        gathered = [(ctx.all_gather(h, axis=0), ctx.all_gather(c, axis=0)) for h, c in new_state]
        return loss, grads, gathered

    def _distributed_step(self, batch, progress):
        strategy = self.strategy
        seed = self.rng.make_seeds(1)[:, 0] if self.model_cfg.drops else tf.zeros([2], tf.int64)
        results = strategy.run(self._replica_step, args=(batch, seed))
        # every replica holds the same reduced values; the update runs once, in cross-replica
        # context, and writes every copy of the mirrored variables
        loss, grads, new_state = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0], results)
        return (loss, *self._update(grads, new_state, progress))

    def _train_block_distributed(self, batches, progress, count=None):
        return self._steps(batches, progress, self._distributed_step, count)

    def _any_replica(self, flag):
        """True on every worker when any worker passes True (a stop must be agreed on)."""
        def count(f):
            # made on the replica's device: an all-reduce needs to know where its input lives
            local = tf.cast(f, tf.float32) + tf.zeros([])
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
        total = self.strategy.run(count, args=(flag,))
        return self.strategy.experimental_local_results(total)[0] > 0
