"""The run folder and what guards it: ``config.json`` and checkpoints (``checkpoint``), the one-writer
lock (``lock``), memory and disk checks before anything large is built (``resources``), and the run's
reports: log lines, ``metrics.jsonl`` and TensorBoard files (``reporting``)."""
