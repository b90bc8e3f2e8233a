"""Where metrics go: a log line, TensorBoard scalars and a JSON-lines file, from process 0.

WORKDIR/metrics.jsonl holds one object per write, {"split", "step", "time", <name>: value}, for
scripts. A resumed run appends to it: steps between the last checkpoint and a crash appear
twice, and the later line is the one the resumed run computed.
"""

import json
import os
import time

import jax
import tensorflow as tf

from bert_jax.runtime import report


class MetricWriter:
  """Writes scalars to `WORKDIR/tensorboard/<split>` and `WORKDIR/metrics.jsonl`."""

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    self._writers = {}
    self._logdir = f"{workdir}/tensorboard"
    self.jsonl_path = f"{workdir}/metrics.jsonl"
    # Object stores (gs://) cannot append to a file: there the whole file is rewritten.
    self._append = "://" not in workdir
    self._lines = None

  def write_scalars(self, split: str, step: int, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    if split not in self._writers:
      self._writers[split] = tf.summary.create_file_writer(f"{self._logdir}/{split}")
    with self._writers[split].as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, value, step=step)
    record = {"split": split, "step": step, "time": time.time(),
              **{name: float(value) for name, value in scalars.items()}}
    self._write_line(json.dumps(record))

  def _write_line(self, line: str) -> None:
    if self._append:
      size = os.path.getsize(self.jsonl_path) if os.path.exists(self.jsonl_path) else 0
      try:
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
          f.write(line + "\n")
      except BaseException:
        # A full disk (or a signal) mid-line: the file keeps its whole lines only.
        if os.path.exists(self.jsonl_path):
          os.truncate(self.jsonl_path, size)
        raise
      return
    if self._lines is None:
      self._lines = []
      if tf.io.gfile.exists(self.jsonl_path):
        with tf.io.gfile.GFile(self.jsonl_path) as f:
          self._lines = f.read().splitlines()
    self._lines.append(line)
    with tf.io.gfile.GFile(self.jsonl_path, "w") as f:
      f.write("\n".join(self._lines) + "\n")

  def flush(self) -> None:
    for writer in self._writers.values():
      writer.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()


def log_line(prefix: str, step: int, scalars: dict[str, float]) -> None:
  """One line of `name=value` pairs on stdout, process 0 only: clean to read and to grep."""
  parts = []
  for name, value in scalars.items():
    if not isinstance(value, float):
      parts.append(f"{name}={value}")
    elif name == "learning_rate":
      parts.append(f"{name}={value:.3g}")
    elif name.endswith("per_second"):
      parts.append(f"{name}={value:.1f}")
    else:
      parts.append(f"{name}={value:.4f}")
  report.line(f"{prefix} step={step} " + " ".join(parts))


def eval_summary(eval_metrics: dict[str, float], baseline: float) -> str:
  """The eval's headline: MLM accuracy against the baseline, and NSP's when it was trained."""
  summary = (f"MLM accuracy {eval_metrics['mlm_accuracy']:.4f} vs most-frequent-token baseline "
             f"{baseline:.4f}")
  if "nsp_accuracy" in eval_metrics:
    summary += f"; NSP accuracy {eval_metrics['nsp_accuracy']:.4f}"
  return summary
