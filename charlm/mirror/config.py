"""A mirror run's settings: the model, the data and the training (kept in its ``config.json``)."""
from __future__ import annotations

from dataclasses import dataclass

from charlm.errors import CharlmError


@dataclass
class MirrorConfig:
    # the model
    embedding_size: int = 32
    hidden: int = 96               # decoder units; the encoder has hidden // 2 each way
    attention: str = "general"     # "general" (h . W m) or "dot" (h . m)
    # the data
    max_chars: int = 80            # longest training line (``run`` cuts longer ones at spaces)
    max_words: int = 10
    random_fraction: float = 0.25  # lines of random letter strings among the training lines
    heldout: float = 0.05          # the corpus's last fraction of words, never trained on
    # the training
    corpus: str = "text8"
    batch_size: int = 64
    steps: int = 200_000
    learning_rate: float = 0.003
    clip: float = 5.0
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    time_limit: float = 0.0

    def validate(self):
        checks = [(self.embedding_size >= 1, "--embedding-size must be at least 1"),
                  (self.hidden >= 2 and self.hidden % 2 == 0, "--hidden must be even and at least 2"),
                  (self.attention in ("general", "dot"), "--attention must be general or dot"),
                  (self.max_chars >= 2, "--max-chars must be at least 2"),
                  (self.max_words >= 1, "--max-words must be at least 1"),
                  (0.0 <= self.random_fraction <= 1.0, "--random-fraction must be in [0, 1]"),
                  (0.0 <= self.heldout < 1.0, "--heldout must be in [0, 1)"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.steps >= 1, "--steps must be at least 1"),
                  (self.learning_rate > 0, "--learning-rate must be positive"),
                  (self.clip >= 0, "--clip must not be negative"),
                  (self.log_every >= 1, "--log-every must be at least 1"),
                  (self.checkpoint_every >= 0, "--checkpoint-every must not be negative"),
                  (self.time_limit >= 0, "--time-limit must not be negative")]
        for ok, message in checks:
            if not ok:
                raise CharlmError(message)
        return self
