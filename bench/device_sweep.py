"""bench/device_check.py's sweep section: K fine-tuning runs as one program (config.sweep)
against the same K runs one after another.

Both sides train BERT's classifier on the same batch of real-length sentences
(device_packing.sentence_features), unpacked: a run alone is `finetune_program.finetune_step`
jitted with its state donated; the sweep is `sweep_program`'s step over K members (seeds
0..K-1 at one learning rate). Members per second = K / the sweep's step time; a run alone gives
1 / its step time; the ratio is what training them together buys on this device. No
TensorFlow: it runs where only JAX is.
"""

import argparse
import functools

import jax
import numpy as np

from bench import device_packing
from bench import harness
from bert_jax.config import finetune as finetune_config
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import sweep_program
from bert_jax.model import families
from bert_jax.model import modeling


def _config(preset: str, seq_length: int, batch_size: int, dtype: str):
  config = finetune_config.get_config()
  config.model.update(vocab_size=30522, dtype=dtype, attention_probs_dropout_prob=0.0,
                      **harness.PRESETS[preset])
  config.data.max_seq_length = seq_length
  config.train.update(batch_size=batch_size, num_train_steps=1000, num_warmup_steps=100,
                      learning_rate=5e-5)
  return config


def sweep_row(preset: str, features: dict[str, np.ndarray], members: int,
              args: argparse.Namespace, dtype: str) -> dict:
  """Step times of a run alone and of a sweep of `members`, and members per second."""
  batch_size, seq_length = features["input_ids"].shape
  config = _config(preset, seq_length, batch_size, dtype)
  model_config = modeling.BertConfig.from_config(config.model)
  batch = {**features, "weights": np.ones(batch_size, np.float32)}
  example = {k: v[:1] for k, v in batch.items()}
  grid = sweep_program.members([config.train.learning_rate], range(members))
  program = sweep_program.build_sweep_program(config, model_config, "classification",
                                              device_packing.NUM_LABELS, grid)
  started = [program.init_state(member, example, config) for member in grid]
  holder = {"alone": started[0][0], "sweep": sweep_program.stack_states([s for s, _ in started])}
  rngs = sweep_program.stack([rng for _, rng in started])
  alone_step = jax.jit(functools.partial(
      finetune_program.finetune_step, model=program.model,
      tx=sweep_program.member_optimizer(program.unit_tx, config.train.learning_rate),
      loss=families.get("classification").loss), donate_argnums=(0,))
  alone_batch = jax.device_put(batch)
  sweep_batch = jax.device_put({k: np.stack([v] * members) for k, v in batch.items()})

  def alone() -> None:
    holder["alone"], metrics = alone_step(holder["alone"], alone_batch, started[0][1])
    float(metrics["loss"])  # The host sync, as a run's log line.

  def sweep() -> None:
    holder["sweep"], metrics = program.train_step(holder["sweep"], sweep_batch, rngs,
                                                  program.learning_rates)
    float(metrics["loss"][0])

  alone_s = float(np.median(harness.time_calls(alone, args.warmup, args.steps)))
  sweep_s = float(np.median(harness.time_calls(sweep, args.warmup, args.steps)))
  return {"members": members, "alone_ms": 1e3 * alone_s, "sweep_ms": 1e3 * sweep_s,
          "members_per_second": members / sweep_s, "speedup": members * alone_s / sweep_s}
