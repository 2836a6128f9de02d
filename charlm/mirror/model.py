"""The mirror model (Sutskever et al. 2014, with Luong et al. 2015's attention).

* an embedding and a bidirectional encoder of two charlm :class:`~charlm.nn.cells.LSTMCell`\\ s (the
  single-matmul cell), ``hidden // 2`` units each way; padded positions never update the state
  and are masked out of the attention, so padding changes neither the loss nor the output;
* a decoder ``LSTMCell`` started from the encoder's final states, reading the previous character
  and the previous attentional vector ("input feeding": the decoder knows where it looked last,
  which is what lets it walk backwards through a word), then "general" attention
  ``score(h, m) = h . W m`` over the encoder states and ``tanh(W_c [context; h])``;
* a softmax over the vocabulary plus an end-of-line token.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.mirror.config import MirrorConfig
from charlm.nn.cells import LSTMCell
from charlm.nn.init import initial_matrix


class MirrorNet(tf.Module):
    """Bidirectional LSTM encoder, attentional LSTM decoder (tokens: the vocabulary, then GO/EOS)."""

    def __init__(self, config: MirrorConfig, vocab_size: int, seed: int = 0):
        super().__init__(name="mirror")
        rng = np.random.default_rng(seed)
        e, d = config.embedding_size, config.hidden
        half = d // 2
        self.cfg, self.vocab_size = config, vocab_size
        self.go = self.eos = vocab_size              # GO is read, EOS is written: one id each way
        self.embedding = tf.Variable(rng.uniform(-1, 1, (vocab_size + 1, e)), dtype=tf.float32, name="embedding")
        self.forward = _cell(rng, e, half, "encoder_forward")
        self.backward = _cell(rng, e, half, "encoder_backward")
        self.decoder = _cell(rng, e + d, d, "decoder")      # input: [character, attentional vector]
        self.attention_w = (tf.Variable(initial_matrix(rng, (d, d), "orthogonal"), dtype=tf.float32, name="attention_w")
                            if config.attention == "general" else None)
        self.combine_w = tf.Variable(initial_matrix(rng, (2 * d, d), "orthogonal"), dtype=tf.float32, name="combine_w")
        self.out_w = tf.Variable(initial_matrix(rng, (d, vocab_size + 1), "orthogonal"), dtype=tf.float32, name="out_w")
        self.out_b = tf.Variable(tf.zeros([vocab_size + 1]), name="out_b")

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

    # -- encoder ------------------------------------------------------------------------------------
    def encode(self, src, lengths):
        """``src`` [B, W] ids, ``lengths`` [B] -> memory [B, W, D], keys [B, W, D], score bias [B, W], state."""
        width = _size(src, 1)
        backwards_src = tf.reverse_sequence(src, lengths, seq_axis=1, batch_axis=0)
        xf = self._inputs(self.forward, src)
        xb = self._inputs(self.backward, backwards_src)
        batch = tf.shape(src)[0]
        zero = tf.zeros([batch, self.forward.hidden])
        wf, wb = self.forward.recurrent_kernel, self.backward.recurrent_kernel

        def body(t, hf, cf, hb, cb, outf, outb):
            valid = (t < lengths)[:, None]
            hf2, (_, cf2) = self.forward.step(xf[t], tf.matmul(hf, wf), (hf, cf))
            hb2, (_, cb2) = self.backward.step(xb[t], tf.matmul(hb, wb), (hb, cb))
            # a padded position leaves the state as it was: the final state is the last real one's
            hf, cf = tf.where(valid, hf2, hf), tf.where(valid, cf2, cf)
            hb, cb = tf.where(valid, hb2, hb), tf.where(valid, cb2, cb)
            return t + 1, hf, cf, hb, cb, outf.write(t, hf), outb.write(t, hb)

        arrays = [tf.TensorArray(tf.float32, size=width) for _ in range(2)]
        _, hf, cf, hb, cb, outf, outb = tf.while_loop(
            lambda t, *_: t < width, body, (0, zero, zero, zero, zero, *arrays), maximum_iterations=width)
        outf = tf.transpose(outf.stack(), [1, 0, 2])
        outb = tf.reverse_sequence(tf.transpose(outb.stack(), [1, 0, 2]), lengths, seq_axis=1, batch_axis=0)
        memory = tf.concat([outf, outb], axis=-1)
        keys = memory if self.attention_w is None else tf.einsum("bwd,ed->bwe", memory, self.attention_w)
        bias = tf.where(tf.sequence_mask(lengths, width), 0.0, -1e9)
        return memory, keys, bias, (tf.concat([hf, hb], -1), tf.concat([cf, cb], -1))

    def _inputs(self, cell, tokens):
        """``x @ kernel[:in] + bias`` for every position, time-major: one row lookup."""
        table = tf.matmul(self.embedding, cell.input_kernel) + cell.bias
        return tf.gather(table, tf.transpose(tokens))

    # -- decoder ------------------------------------------------------------------------------------
    def _decoder_step(self, xw, att, h, c, memory, keys, bias):
        """One decoder step from its input projection ``xw``: new ``(attentional vector, h, c)``."""
        # the decoder kernel's rows after the character's: [attentional vector, h]
        hw = tf.matmul(tf.concat([att, h], -1), self.decoder.kernel[self.cfg.embedding_size:])
        h, (_, c) = self.decoder.step(xw, hw, (h, c))
        scores = tf.squeeze(tf.matmul(keys, h[:, :, None]), -1) + bias          # [B, W]
        weights = tf.nn.softmax(scores)
        context = tf.squeeze(tf.matmul(weights[:, None, :], memory), 1)          # [B, D]
        return tf.tanh(tf.matmul(tf.concat([context, h], -1), self.combine_w)), h, c

    def logits(self, src, lengths, tgt_in):
        """Teacher-forced logits ``[B, T, V + 1]`` for decoder inputs ``tgt_in`` [B, T]."""
        memory, keys, bias, (h, c) = self.encode(src, lengths)
        steps = _size(tgt_in, 1)
        xw = self._decoder_inputs(tf.transpose(tgt_in))

        def body(t, att, h, c, out):
            att, h, c = self._decoder_step(xw[t], att, h, c, memory, keys, bias)
            return t + 1, att, h, c, out.write(t, att)

        att = tf.zeros_like(h)
        _, _, _, _, out = tf.while_loop(lambda t, *_: t < steps, body,
                                        (0, att, h, c, tf.TensorArray(tf.float32, size=steps)),
                                        maximum_iterations=steps)
        return tf.einsum("tbd,dv->btv", out.stack(), self.out_w) + self.out_b

    def _decoder_inputs(self, tokens):
        cell = self.decoder
        table = tf.matmul(self.embedding, cell.kernel[:self.cfg.embedding_size]) + cell.bias
        return tf.gather(table, tokens)

    def greedy(self, src, lengths, max_steps):
        """Greedy decoding: output ids ``[B, max_steps]`` (EOS where a line ended)."""
        memory, keys, bias, (h, c) = self.encode(src, lengths)
        batch = tf.shape(src)[0]
        table = tf.matmul(self.embedding, self.decoder.kernel[:self.cfg.embedding_size]) + self.decoder.bias

        def body(t, token, done, att, h, c, out):
            att, h, c = self._decoder_step(tf.gather(table, token), att, h, c, memory, keys, bias)
            token = tf.argmax(tf.matmul(att, self.out_w) + self.out_b, axis=-1, output_type=tf.int32)
            token = tf.where(done, self.eos, token)
            return t + 1, token, done | (token == self.eos), att, h, c, out.write(t, token)

        start = (0, tf.fill([batch], self.go), tf.zeros([batch], tf.bool), tf.zeros_like(h), h, c,
                 tf.TensorArray(tf.int32, size=max_steps))
        *_, out = tf.while_loop(lambda t, _, done, *__: (t < max_steps) & ~tf.reduce_all(done), body, start)
        return tf.transpose(out.stack())


def _size(x, axis: int):
    """A dimension, static when known (XLA wants loop bounds it can see)."""
    return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def _cell(rng, input_size: int, hidden: int, name: str) -> LSTMCell:
    cell = LSTMCell(input_size, hidden, initial_matrix(rng, (input_size + hidden, 4 * hidden), "orthogonal",
                                                 recurrent_rows=hidden), name=name)
    cell.bias.assign(np.concatenate([np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)]))  # forget gate 1
    return cell
