"""DropConnect on the recurrent kernels (--weight-drop): one mask per batch, training only."""
import numpy as np
import tensorflow as tf

from charlm.config import ModelConfig
from charlm.nn.model import CharLM


def test_one_mask_per_batch_on_the_recurrent_weights_only():
    model = CharLM(ModelConfig(hidden=16, embedding_size=8, weight_drop=0.5, init="orthogonal"), 12, seed=3)
    tokens = tf.constant(np.tile(np.array([[1], [4], [2], [7], [3]], np.int32), [1, 3]))   # 3 equal rows
    state = model.zero_state(3)
    seed = tf.constant([5, 9], tf.int64)
    plain, _ = model.unroll(tokens, state)
    dropped, _ = model.unroll(tokens, state, seed)
    again, _ = model.unroll(tokens, state, seed)
    other, _ = model.unroll(tokens, state, tf.constant([6, 9], tf.int64))
    np.testing.assert_array_equal(dropped.numpy(), again.numpy())            # seeded: reproducible
    # the first step reads h = 0, so a mask on the recurrent kernel cannot touch it
    np.testing.assert_allclose(dropped[0].numpy(), plain[0].numpy(), rtol=1e-6)
    assert not np.allclose(dropped[1:].numpy(), plain[1:].numpy(), atol=1e-4)
    assert not np.allclose(dropped[1:].numpy(), other[1:].numpy(), atol=1e-4)
    # one mask for the whole batch: equal rows stay equal
    np.testing.assert_allclose(dropped[:, 0].numpy(), dropped[:, 2].numpy(), rtol=1e-6)
    # the mask is the kernel's: the same logits come from an unmasked model with that masked kernel
    w_x, w_h = model.cells[0].split()
    noise = tf.random.stateless_uniform(tf.shape(w_h), seed=seed + tf.constant([1, 0], tf.int64))
    masked = tf.concat([w_x, w_h * tf.cast(noise < 0.5, tf.float32) / 0.5], 0)
    model.cells[0].kernel.assign(masked)
    model.config.weight_drop = 0.0
    np.testing.assert_allclose(model.unroll(tokens, state)[0].numpy(), dropped.numpy(), rtol=1e-5, atol=1e-6)
