"""Host input pipeline throughput (read + mask + batch) against the train step it feeds.

    taskset -c 0 python bench/pipeline.py [--config=configs/tiny.py]
        [--workdir=/tmp/bench_pipeline] [--batches=200]

Prepares the config's data in the workdir once (the embedded corpus by default), then times
this host's training batches and one jitted train step of the config's model on the same batch
size, and prints both and their ratio. Pin it to one core (taskset) for the per-core figure.
The target (docs/BENCHMARKS.md, "Targets") is a pipeline at least 10x faster than the step it
feeds.
"""

import functools
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bert_jax.model import modeling  # pylint: disable=g-import-not-at-top
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data import inputs
from bert_jax.runtime import optim
from bert_jax.runtime import precision
from bert_jax.runtime import train_state
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_pipeline", "Where the data is prepared.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Batches to time.")
_STEPS = flags.DEFINE_integer("steps", 10, "Train steps to time.")


def time_pipeline(config, data, num_batches: int) -> float:
  """Sequences per second out of the host pipeline, after a warm-up batch."""
  iterator = inputs.train_dataset(config, data, start_index=0).as_numpy_iterator()
  next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * config.train.batch_size / (time.perf_counter() - start)


def time_train_step(config, batch, num_steps: int) -> float:
  """Sequences per second of the jitted train step (compile excluded) on one batch."""
  model = modeling.BertForPreTraining(modeling.BertConfig.from_config(config.model))
  tx = optim.create_optimizer(config.train)
  state = train_state.create_train_state(jax.random.key(0), model, tx, batch)
  step = jax.jit(functools.partial(train_program.train_step, model=model, tx=tx), donate_argnums=0)
  state, metrics = step(state, batch, jax.random.key(1))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, batch, jax.random.key(1))
  jax.block_until_ready(metrics)
  return num_steps * config.train.batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  config = _CONFIG.value
  why = precision.resolve_dtype(config)  # The step a run of this config would compile.
  data = inputs.resolve(config, _WORKDIR.value)
  pipeline_rate = time_pipeline(config, data, _BATCHES.value)
  batch = next(inputs.train_dataset(config, data, start_index=0).as_numpy_iterator())
  step_rate = time_train_step(config, {k: np.asarray(v) for k, v in batch.items()},
                              _STEPS.value)
  print(f"config: batch {config.train.batch_size}, seq {config.data.max_seq_length}, "
        f"predictions {config.data.max_predictions_per_seq}, "
        f"whole_word_masking={config.data.whole_word_masking}; {config.model.dtype} ({why})")
  cores = len(os.sched_getaffinity(0))
  print(f"pipeline ({cores} core(s)): {pipeline_rate:,.0f} sequences/s")
  print(f"train step ({jax.devices()[0].platform}, {jax.device_count()} device(s)): "
        f"{step_rate:,.1f} sequences/s")
  print(f"pipeline / step: {pipeline_rate / step_rate:.1f}x")


if __name__ == "__main__":
  app.run(main)
