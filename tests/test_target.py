"""MLPerf-style evaluation: a run stops, with a checkpoint, once it reaches its target accuracy."""

import os
import re

from bert_jax.pretraining import train
from test_train import small_config
from test_train import write_corpus


def test_reaching_the_target_mlm_accuracy_stops_the_run(tmp_path, capsys):
  corpus = write_corpus(str(tmp_path))
  workdir = str(tmp_path / "work")
  # 1e-6: the first eval (step 2) reaches it with a single masked token right.
  config = small_config(corpus, num_train_steps=6, eval_every_steps=2,
                        checkpoint_every_steps=100, target_mlm_accuracy=1e-6)
  metrics = train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert metrics["mlm_accuracy"] >= 1e-6
  assert re.search(r"Reached the target MLM accuracy \d\.\d{4} >= 1e-06 at step 2, after "
                   r"\d+:\d\d:\d\d of training \(time-to-target\)", out), out
  assert "eval step=2 " in out and "train step=4 " not in out and "eval step=4 " not in out
  assert "Final eval at step 2:" in out
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
