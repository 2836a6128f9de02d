"""Plain SGD and Adam(W) as ``tf.Module``s, with the ud730 and the budgeted learning-rate schedules.

They are a few lines each, live inside the compiled training step (XLA fuses their updates with
the backward pass), and their slots and step are ordinary variables, so ``tf.train.Checkpoint``
saves and restores them exactly.
"""
from __future__ import annotations

import tensorflow as tf

from charlm.config import TrainConfig


def learning_rate(config: TrainConfig, step, progress=None):
    """The learning rate of ``step`` (the optimizer's count of steps taken before it).

    ``"step"``: ``lr * decay_rate ** (step / decay_steps)``, floored when ``staircase`` (ud730:
    10, 1, 0.1).  ``"budget"`` ("budgeted training", Li et al., ICLR 2020): ``lr * (1 - progress)``,
    the fraction of the run's budget still ahead, so the rate reaches zero as the time limit (or
    the step count) does, after a linear warm-up over the first ``warmup_steps``.
    """
    if config.schedule == "budget":
        warm = tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(max(config.warmup_steps, 1)))
        return config.learning_rate * warm * tf.clip_by_value(1.0 - progress, 0.0, 1.0)
    exponent = tf.cast(step, tf.float32) / float(config.decay_steps)
    if config.staircase:
        exponent = tf.floor(exponent)
    return config.learning_rate * tf.pow(tf.constant(config.decay_rate, tf.float32), exponent)


class SGD(tf.Module):
    def __init__(self, variables):
        super().__init__(name="sgd")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    def apply(self, grads, variables, lr):
        for g, v in zip(grads, variables):
            v.assign_sub(tf.cast(lr, v.dtype) * g)
        self.step.assign_add(1)


class Adam(tf.Module):
    """Adam; with ``weight_decay``, AdamW's decoupled decay of the weight matrices (not biases)."""

    def __init__(self, variables, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.0):
        super().__init__(name="adam")
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.weight_decay = weight_decay
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]

    def apply(self, grads, variables, lr):
        t = tf.cast(self.step + 1, tf.float32)
        scale = lr * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(g))
            update = tf.cast(scale, var.dtype) * m / (tf.sqrt(v) + self.epsilon)
            if self.weight_decay and var.shape.rank == 2:
                update += tf.cast(lr * self.weight_decay, var.dtype) * var
            var.assign_sub(update)
        self.step.assign_add(1)


def make_optimizer(config: TrainConfig, variables):
    if config.optimizer == "adam":
        return Adam(variables, weight_decay=config.weight_decay)
    return SGD(variables)
