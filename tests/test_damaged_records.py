"""A damaged record in the middle of a run's training records: with data.skip_damaged_records
the run goes past it, counts it, and a resumed run sees the same stream (off, the run stops
with a line naming the file and the offset: tests/test_pipeline.py)."""

import json
import os

import numpy as np

from bert_jax.pretraining import train
from bert_jax.pretraining.data import inputs
from bert_jax.pretraining.data import workdir_data
from test_pipeline import _record_offsets
from test_train import small_config, write_corpus


def test_a_run_goes_past_a_damaged_record_counting_it_and_resumes_the_same_stream(tmp_path):
  workdir = str(tmp_path / "work")
  config = small_config(write_corpus(str(tmp_path)), num_train_steps=4, checkpoint_every_steps=2)
  config.data.skip_damaged_records = True
  metadata = workdir_data.prepare(config, workdir)
  damaged = metadata["train_files"][0]
  offsets = _record_offsets(damaged)
  with open(damaged, "r+b") as f:
    f.seek(offsets[3] + 12 + 7)  # A byte of the fourth record's data.
    f.write(bytes([f.read(1)[0] ^ 0x5A]))

  final = train.train_and_evaluate(config, workdir)
  assert final["damaged_records"] == 1
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [row["damaged_records"] for row in rows if row["split"] == "eval"] == [1]

  # Resumed past an epoch (records_per_epoch: the records that read), the stream goes on as the
  # whole one does.
  data = inputs.resolve(config, workdir)
  found = inputs.damaged_files(config, data.train_files, is_training=True)
  epoch = metadata["train_file_instances"][0] - 1
  start = (epoch // 8 + 4) * 8  # In the second epoch, at a batch boundary.
  whole = list(inputs.train_dataset(config, data, 0, found).take(start // 8 + 4)
               .as_numpy_iterator())
  resumed = list(inputs.train_dataset(config, data, start, found).take(4).as_numpy_iterator())
  for expected, batch in zip(whole[start // 8:], resumed):
    for name in batch:
      np.testing.assert_array_equal(batch[name], expected[name])
