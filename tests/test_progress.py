"""What a run reports: every metric in TensorBoard and metrics.jsonl, the summary, a profile."""

import glob
import json
import math

import numpy as np
import tensorflow as tf

from bert_jax.pretraining import train
from bert_jax.runtime import progress
from test_train import small_config, write_corpus

TRAIN_METRICS = ("loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "learning_rate",
                 "grad_norm", "param_norm", "sequences_per_second", "tokens_per_second", "mfu",
                 "step_time", "input_wait_fraction", "checkpoint_seconds")
EVAL_METRICS = ("loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy",
                "most_frequent_token_accuracy")


def _tensorboard_scalars(logdir: str) -> dict[int, dict[str, float]]:
  """{step: {tag: value}} from the event files TensorBoard would read."""
  scalars = {}
  for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
  return scalars


def test_metrics_summary_and_profile_of_a_short_run(tmp_path, capsys):
  corpus = write_corpus(str(tmp_path))
  workdir = str(tmp_path / "work")
  config = small_config(corpus, num_train_steps=4, log_every_steps=2, checkpoint_every_steps=2,
                        eval_every_steps=4)
  config.profile.steps = "3-4"
  train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out

  records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  assert [(r["split"], r["step"]) for r in records] == [("train", 2), ("train", 4), ("eval", 4)]
  for record in records:
    names = TRAIN_METRICS if record["split"] == "train" else EVAL_METRICS
    for name in names:
      assert math.isfinite(record[name]), (record["split"], name, record.get(name))
  step_4 = records[1]
  assert 0 < step_4["mfu"] < 1 and 0 <= step_4["input_wait_fraction"] <= 1
  assert step_4["checkpoint_seconds"] > 0  # The save at step 2 falls in the window (2, 4].
  assert step_4["param_norm"] > 0 and step_4["tokens_per_second"] == (
      step_4["sequences_per_second"] * config.data.max_seq_length)

  # TensorBoard has the same scalars at the same steps.
  for split, record in (("train", step_4), ("eval", records[2])):
    board = _tensorboard_scalars(f"{workdir}/tensorboard/{split}")[4]
    names = TRAIN_METRICS if split == "train" else EVAL_METRICS
    for name in names:
      np.testing.assert_allclose(board[name], record[name], rtol=1e-6)

  for start in ("Devices: 1 x", "Model: ", "Batch: 8 sequences global", "Data: data.source=",
                "Compiled the train step in"):
    assert "\n" + start in out, start
  assert "train step=4 " in out and " eta=0s" in out and " eta=" in out.split("train step=2 ")[1]
  assert glob.glob(f"{workdir}/profile/**/*.xplane.pb", recursive=True)
  assert "Profile of steps 3-4 in" in out


def test_progress_window_arithmetic(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
  reporter = progress.Progress(step=10, num_train_steps=110, batch_size=8, seq_length=16,
                               flops_per_step=1e9, peak_flops=1e10)
  with reporter.input():
    clock[0] += 1.0  # 1 s waiting for input ...
  clock[0] += 3.0  # ... 3 s of steps ...
  with reporter.checkpoint():
    clock[0] += 2.0  # ... 2 s saving ...
  with reporter.excluded():
    clock[0] += 50.0  # ... and an eval that counts for nothing.
  report = reporter.report(20)  # 10 steps in 4 s of training.
  assert report["step_time"] == 0.4 and report["sequences_per_second"] == 20.0
  assert report["tokens_per_second"] == 320.0 and report["mfu"] == 0.25
  assert report["input_wait_fraction"] == 0.25 and report["checkpoint_seconds"] == 2.0
  assert report["eta_seconds"] == 0.4 * 90
  clock[0] += 1.0
  assert reporter.report(21)["checkpoint_seconds"] == 0.0  # A new window.


def test_format_duration():
  assert progress.format_duration(45) == "45s"
  assert progress.format_duration(192) == "3m12s"
  assert progress.format_duration(3720) == "1h02m"
