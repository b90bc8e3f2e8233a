"""A sweep's members trained together equal the same runs trained alone (float32).

Each member (a learning rate, a seed) is compared with finetune_program's run alone with that
learning rate and seed: the same initial params, data order and dropout, stepped by the
single-run step. Losses over the first 20 steps within rtol 1e-4, and the dev predictions after
them on at least 99% of the examples.
"""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax import errors
from bert_jax.config import finetune as finetune_config
from bert_jax.config import validation
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import sweep_program
from bert_jax.model import modeling
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state

_STEPS = 20
_BATCH = 8
_LENGTH = 16


def _config(learning_rate: float = 5e-4, seed: int = 0):
  config = finetune_config.get_config()
  config.model.update(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32, dtype="float32")
  config.data.max_seq_length = _LENGTH
  config.train.update(batch_size=_BATCH, num_train_steps=_STEPS, num_warmup_steps=2,
                      learning_rate=learning_rate)
  config.seed = seed
  return config


def _features(family: str, num_rows: int, num_labels: int, seed: int) -> dict[str, np.ndarray]:
  """Rows of varied real lengths, with labels a model can learn (from the first token)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(4, _LENGTH + 1, num_rows)
  mask = (np.arange(_LENGTH)[None, :] < lengths[:, None]).astype(np.int32)
  input_ids = rng.integers(5, 64, (num_rows, _LENGTH)).astype(np.int32) * mask
  features = {"input_ids": input_ids, "input_mask": mask,
              "segment_ids": np.zeros_like(input_ids)}
  if family == "classification":
    features["label_ids"] = (input_ids[:, 1] % num_labels).astype(np.int32)
  else:  # token
    features["label_ids"] = (input_ids % num_labels).astype(np.int32)
    features["label_weights"] = mask.astype(np.float32)
  return features


def _alone(family: str, member: sweep_program.Member, model_config, num_labels, train, dev):
  """The member's run alone: its losses and its dev predictions (argmax)."""
  config = _config(member.learning_rate, member.seed)
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_axis_rules(config)
  example = {k: v[:1] for k, v in train.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = finetune_program.build_program(config, mesh, rules, model_config, family,
                                             num_labels, example)
    init_rng, dropout_rng = jax.random.split(jax.random.key(member.seed))
    state = jax.jit(functools.partial(train_state.create_train_state, model=program.model,
                                      tx=program.tx, batch=example),
                    out_shardings=program.state_shardings)(init_rng)
    losses = []
    for step in range(_STEPS):
      indices = finetune_program.batch_indices(len(train["input_ids"]), _BATCH, step, member.seed)
      state, metrics = program.train_step(state, {k: v[indices] for k, v in train.items()},
                                          dropout_rng)
      losses.append(float(metrics["loss"]))
    logits = program.predict_step(state.params, {k: v for k, v in dev.items()
                                                 if not k.startswith("label")})
  return np.array(losses), np.argmax(np.asarray(logits), -1)


@pytest.mark.parametrize("family, num_labels", [("classification", 3), ("token", 5)])
def test_members_trained_together_equal_runs_alone(family, num_labels):
  config = _config()
  model_config = modeling.BertConfig.from_config(config.model)
  train = _features(family, 48, num_labels, seed=1)
  dev = _features(family, 40, num_labels, seed=2)
  grid = sweep_program.members([5e-4, 2e-4], seeds=[0, 7])
  program = sweep_program.build_sweep_program(config, model_config, family, num_labels, grid)
  example = {k: v[:1] for k, v in train.items()}
  started = [program.init_state(member, example, config) for member in grid]
  states = sweep_program.stack_states([state for state, _ in started])
  rngs = sweep_program.stack([rng for _, rng in started])
  losses = []
  for step in range(_STEPS):
    states, metrics = program.train_step(states, program.batches(train, _BATCH, step), rngs,
                                         program.learning_rates)
    losses.append(np.asarray(metrics["loss"]))  # [members]
  losses = np.stack(losses, axis=1)  # [members, steps]
  logits = program.predict_step(states.params, {k: v for k, v in dev.items()
                                                if not k.startswith("label")})
  predictions = np.argmax(np.asarray(logits), -1)  # [members, examples(, tokens)]

  for i, member in enumerate(grid):
    alone_losses, alone_predictions = _alone(family, member, model_config, num_labels, train, dev)
    # Seen: at most 1.7e-7 relative (float32: the peak applied last, stacked matmuls).
    np.testing.assert_allclose(losses[i], alone_losses, rtol=1e-4, err_msg=str(member))
    assert np.mean(predictions[i] == alone_predictions) >= 0.99, member
  # The members differ: their learning rates and seeds matter.
  assert abs(losses[0, -1] - losses[2, -1]) > 1e-3 and abs(losses[0, -1] - losses[1, -1]) > 1e-3


@pytest.mark.parametrize("field, value, message", [
    ("seeds", 0, r"^sweep\.seeds=0: must be at least 1$"),
    ("learning_rates", (5e-5, -1.0), r"^sweep\.learning_rates=\(5e-05, -1\.0\): each must be a "
                                     r"positive number"),
])
def test_a_bad_sweep_is_one_line(field, value, message):
  config = _config()
  config.sweep[field] = value
  with pytest.raises(errors.UserError, match=message):
    validation.validate(config)


def test_the_grid_is_learning_rate_by_learning_rate():
  config = _config(seed=3)
  assert not sweep_program.sweeping(config)
  config.sweep.update(learning_rates=(5e-5, 2e-5), seeds=2)
  assert sweep_program.sweeping(config)
  assert sweep_program.grid(config) == (
      sweep_program.Member(5e-5, 3), sweep_program.Member(5e-5, 4),
      sweep_program.Member(2e-5, 3), sweep_program.Member(2e-5, 4))
