"""ud730 problem 3: a sequence-to-sequence LSTM that mirrors every word of a line.

``the quick brown fox`` -> ``eht kciuq nworb xof``.  The network reads the whole line and writes
the whole line, one character at a time; nothing reverses words by rule and nothing splits the
line into words before the network (except :func:`~charlm.mirror.use.pieces`, which cuts a line
longer than the model was trained for at spaces: mirroring is per word, so that is exact).

Its modules, in the order data flows:

* ``config``: :class:`~charlm.mirror.config.MirrorConfig`, the run's settings;
* ``data``: training lines cut from a corpus's words and random letters, padded batches, the
  mirrored targets (by rule), and the lines ``eval`` and the benchmark score;
* ``model``: :class:`~charlm.mirror.model.MirrorNet`, the encoder-decoder with attention;
* ``folder``: a mirror run's ``config.json`` and restoring its checkpoints;
* ``trainer``: teacher forcing, the loss and the training run (``mirror train``), on the language
  model's run machinery: its budget, run-folder lock, signal handling and reports;
* ``use``: greedy decoding of a trained model (``mirror run``, ``mirror eval``).
"""
