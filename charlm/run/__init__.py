"""The run folder and what guards it: ``config.json``, checkpoints and the one-writer ``RunLock``
(``checkpoint``), opening a folder for writing (``folder``), SIGINT/SIGTERM while a run trains
(``signals``), memory and disk checks before anything large is built (``resources``), and the run's
reports: log lines, ``metrics.jsonl`` and TensorBoard files (``reporting``)."""
