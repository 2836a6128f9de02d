"""What a training run tells its user: log lines, a progress bar, ``metrics.jsonl`` and TensorBoard.

Only the chief of a distributed run writes.  A write that fails (a full disk) is said once and
that output is dropped for the rest of the run; the training goes on.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import tensorflow as tf

from charlm.run import checkpoint as ckpt


def log_to_stderr(message: str):
    print(message, file=sys.stderr, flush=True)


class Reporter:
    def __init__(self, run_dir: Path, log=log_to_stderr, chief: bool = True, chars_per_token: float = 1.0):
        self.run_dir = Path(run_dir)
        self.log = log
        self.chief = chief
        self.chars_per_token = chars_per_token
        # a progress bar only on an interactive stderr: log files get the periodic lines only
        self.interactive = log is log_to_stderr and sys.stderr.isatty()
        self.writer = tf.summary.create_noop_writer()
        self.step = 0                    # the step being reported, for warnings
        self._off = set()                # "metrics", "TensorBoard logs": writes that failed once

    def open(self):
        if self.chief:
            self._write("TensorBoard logs", self.run_dir / ckpt.LOG_DIR, lambda: setattr(
                self, "writer", tf.summary.create_file_writer(str(self.run_dir / ckpt.LOG_DIR))))

    def close(self):
        self._write("TensorBoard logs", self.run_dir / ckpt.LOG_DIR, self.writer.close)

    def progress(self, step: int, total: int, loss: float, chars_per_sec: float):
        if not self.interactive:
            return
        width = 30
        filled = int(width * step / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] step {step}/{total}  "
                         f"loss {loss:.4f}  {chars_per_sec:,.0f} chars/s \033[K")
        sys.stderr.flush()

    def record(self, record: dict):
        """A language model's periodic record: a metrics line, TensorBoard scalars and a log line."""
        scalars = {"train/loss": record["loss"], "train/minibatch_perplexity": record["minibatch_perplexity"],
                   "train/bits_per_char": record["loss"] / math.log(2) / self.chars_per_token,
                   "train/learning_rate": record["learning_rate"], "train/grad_norm": record["grad_norm"],
                   "train/chars_per_sec": record["chars_per_sec"]}
        if "valid_perplexity" in record:
            scalars.update({"valid/perplexity": record["valid_perplexity"], "valid/bits_per_char": record["valid_bpc"]})
        valid = (f"  valid ppl {record['valid_perplexity']:.2f}" if "valid_perplexity" in record else "")
        self.report(record, scalars, f"step {record['step']:>6}  loss {record['loss']:.4f}  "
                                     f"lr {record['learning_rate']:.4g}  "
                                     f"minibatch ppl {record['minibatch_perplexity']:.2f}{valid}  "
                                     f"{record['chars_per_sec']:,.0f} chars/s")

    def report(self, record: dict, scalars: dict, line: str):
        """Any run's periodic record: ``record`` as a metrics line, ``scalars`` ({TensorBoard name:
        value}) at ``record["step"]``, and the log ``line``."""
        self.step = record["step"]
        self._write("metrics", self.run_dir / ckpt.METRICS_FILE, lambda: ckpt.append_metrics(self.run_dir, record))
        # a diverging run's perplexity can pass what a summary holds (float32): show it as inf
        self._summaries(record["step"], lambda: [tf.summary.scalar(
            name, float(value) if abs(value) < 3e38 else math.copysign(math.inf, value))
            for name, value in scalars.items()])
        if self.interactive:
            sys.stderr.write("\r\033[K")
        self.log(line)

    def samples(self, step: int, texts: list[str]):
        self.step = step
        self.log("=" * 80 + "\n" + "\n".join(texts) + "\n" + "=" * 80)
        self._summaries(step, lambda: tf.summary.text("samples", "\n\n".join(texts)))

    def _summaries(self, step: int, write):
        """TensorBoard summaries of ``step``, flushed so that a failing disk shows at once."""
        def write_and_flush():
            with self.writer.as_default(step=step):
                write()
            self.writer.flush()
        self._write("TensorBoard logs", self.run_dir / ckpt.LOG_DIR, write_and_flush)

    def _write(self, what: str, path: Path, write) -> bool:
        """Run ``write``; when it fails, say so once and go on without ``what``."""
        if what in self._off:
            return False
        try:
            write()
            return True
        except (OSError, tf.errors.OpError) as e:
            self._off.add(what)
            if what == "TensorBoard logs":
                self.writer = tf.summary.create_noop_writer()
            self.log(f"warning: cannot write {path} at step {self.step} ({ckpt.write_failure(path.parent, e)}); "
                     f"training goes on without {what}")
            return False
