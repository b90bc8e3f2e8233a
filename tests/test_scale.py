"""Scan vs unrolled layers, remat policies, gradient accumulation and bf16: same numbers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import errors
from bert_jax.config import validation
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data.synthetic import random_batch
from bert_jax.runtime import optim
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from configs import tiny

# Same program up to the order of float32 sums: agreement to ~1e-6 relative is expected.
RTOL, ATOL = 1e-4, 1e-6


def _config(**model_overrides):
  config = tiny.get_config()
  config.model.update(vocab_size=128, hidden_size=32, num_hidden_layers=3,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
  # float32: these tests compare numbers to float32 rounding, not what 'auto' picks here.
  config.model.update({"dtype": "float32", **model_overrides})
  config.data.update(max_seq_length=32, max_predictions_per_seq=5)
  config.train.update(num_warmup_steps=0, learning_rate=1e-3, num_train_steps=10)
  return config


def _run(config, batch, steps=2, grad_accum_steps=1):
  """(metrics of every step, final params) of `steps` train steps on `batch`."""
  model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
  tx = optim.create_optimizer(config.train)
  state = jax.jit(functools.partial(train_state.create_train_state, model=model, tx=tx,
                                    batch=batch))(jax.random.key(0))
  step = jax.jit(functools.partial(train_program.train_step, model=model, tx=tx,
                                   grad_accum_steps=grad_accum_steps))
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append(jax.device_get(metrics))
  return history, jax.device_get(state.params)


def _assert_same(a, b, rtol=RTOL, atol=ATOL):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol), a, b)


@pytest.fixture(scope="module")
def batch():
  return random_batch(8, 32, 5, vocab_size=128, seed=0)


@pytest.fixture(scope="module")
def reference(batch):
  return _run(_config(), batch)


def test_unrolled_layers_match_the_scan_and_really_unroll(batch, reference):
  history, params = _run(_config(scan_layers=False), batch)
  _assert_same(history, reference[0])
  _assert_same(params, reference[1])

  def lowered_text(scan_layers):
    config = _config(scan_layers=scan_layers)
    model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
    return jax.jit(functools.partial(model.apply, deterministic=True)).lower(
        {"params": reference[1]}, batch["input_ids"], batch["segment_ids"],
        batch["input_mask"], batch["masked_lm_positions"]).as_text()

  assert "stablehlo.while" in lowered_text(True)
  assert "stablehlo.while" not in lowered_text(False)


@pytest.mark.parametrize("policy, scan_layers", [
    ("full", True), ("dots_saveable", True), ("dots_with_no_batch_dims_saveable", True),
    ("full", False)])
def test_remat_policies_change_memory_not_numbers(batch, reference, policy, scan_layers):
  """Dropout included: a recomputed layer draws the same dropout masks."""
  history, params = _run(_config(remat_policy=policy, scan_layers=scan_layers), batch)
  _assert_same(history, reference[0])
  _assert_same(params, reference[1])


def _temp_bytes(config, batch):
  model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
  tx = optim.create_optimizer(config.train)
  state = jax.eval_shape(functools.partial(
      train_state.create_train_state, model=model, tx=tx, batch=batch), jax.random.key(0))
  compiled = jax.jit(functools.partial(train_program.train_step, model=model, tx=tx)).lower(
      state, batch, jax.random.key(1)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_full_remat_needs_less_temporary_memory():
  batch = random_batch(32, 64, 5, vocab_size=128, seed=0)
  none = _temp_bytes(_config(), batch)
  full = _temp_bytes(_config(remat_policy="full"), batch)
  assert full < 0.7 * none, (full, none)


def test_grad_accumulation_equals_one_big_batch():
  """4 micro-batches of 2 == one batch of 8, dropout off so both see the same forward pass."""
  batch = random_batch(8, 32, 5, vocab_size=128, seed=3)
  config = _config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  whole_history, whole_params = _run(config, batch, steps=3)
  accumulated_history, accumulated_params = _run(config, batch, steps=3, grad_accum_steps=4)
  _assert_same(accumulated_history, whole_history)
  _assert_same(accumulated_params, whole_params)
  # The normalisation is the whole batch's: the loss is not a mean of micro-batch means, which
  # would differ here since the rows hold different numbers of predictions.
  assert len(set(batch["masked_lm_weights"].sum(1))) > 1


def test_bfloat16_compute_trains_close_to_float32(batch, reference):
  history, params = _run(_config(dtype="bfloat16"), batch)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  for got, want in zip(history, reference[0]):
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=2e-2)
    assert np.isfinite(got["grad_norm"])


def test_scale_out_config_errors_name_the_field():
  config = _config(remat_policy="sometimes")
  with pytest.raises(errors.UserError, match="model.remat_policy='sometimes'"):
    validation.validate(config)
  config = _config()
  config.train.update(batch_size=8, eval_batch_size=8, grad_accum_steps=3)
  mesh = sharding.create_mesh(config.mesh, jax.devices()[:1])
  with pytest.raises(errors.UserError, match="train.grad_accum_steps=3"):
    validation.validate_batch_sizes(config, mesh)
  config.train.grad_accum_steps = 0
  with pytest.raises(errors.UserError, match="train.grad_accum_steps=0"):
    validation.validate(config)
