"""The run folder and what guards it: ``config.json`` and checkpoints (``checkpoint``), opening a
folder for writing under the one-writer ``RunLock`` (``folder``), SIGINT/SIGTERM while a run trains
(``signals``), memory and disk checks before anything large is built (``resources``), and the run's
reports: log lines, ``metrics.jsonl`` and TensorBoard files (``reporting``)."""
