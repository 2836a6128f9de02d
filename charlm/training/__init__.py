"""Training a language model: the run loop and its compiled block of steps (``trainer``), the
optimizers and learning-rate schedules (``optim``), training for a time budget (``budget``) and
data-parallel steps on ``tf.distribute`` (``distribute``)."""
