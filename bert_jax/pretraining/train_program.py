"""The pre-training program: `train_step` / `eval_step` and `build_program`.

What one compiled step is, apart from where its data comes from: no TensorFlow and no tf.data
here, so the same step runs (and is benchmarked, bench/device_check.py) on a GPU box that has
only JAX. `train.py` runs the loop around it; aot.py compiles it for a TPU slice.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.model import families
from bert_jax.model import losses
from bert_jax.model import modeling
from bert_jax.runtime import nan_guard
from bert_jax.runtime import optim
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state


def dummy_batch(batch_size: int, max_seq_length: int,
                max_predictions_per_seq: int) -> dict[str, jax.Array]:
  """A batch of the right shapes and dtypes, for init and for abstract evaluation.

  Host numpy, not device arrays: it is built under meshes of compile-only devices too (aot.py),
  where no device op can run.
  """
  tokens = np.zeros((batch_size, max_seq_length), np.int32)
  predictions = np.zeros((batch_size, max_predictions_per_seq), np.int32)
  return {
      "input_ids": tokens, "input_mask": tokens, "segment_ids": tokens,
      "masked_lm_positions": predictions, "masked_lm_ids": predictions,
      "masked_lm_weights": predictions.astype(np.float32),
      "next_sentence_labels": np.zeros((batch_size,), np.int32),
  }


def _micro_batches(batch: dict[str, jax.Array], num: int) -> dict[str, jax.Array]:
  """[batch, ...] -> [num, batch // num, ...]: row j * num + i goes to micro-batch i.

  Strided rather than contiguous, so each device's shard of the batch holds its share of every
  micro-batch and no example moves between devices.
  """
  def split(x):
    x = x.reshape(x.shape[0] // num, num, *x.shape[1:])  # [batch // num, num, ...]
    x = jnp.swapaxes(x, 0, 1)  # [num, batch // num, ...]
    return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, batch)


def train_step(state: train_state.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformation,
               next_sentence_prediction: bool = True, grad_accum_steps: int = 1
               ) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """One optimizer step on the MLM + NSP loss; returns the new state and summed metrics.

  With grad_accum_steps=k the batch runs as k sequential micro-batches whose gradients are
  summed: the same update as the whole batch at once (losses are normalised by the whole
  batch's weights), in 1/k of the activation memory.
  """
  # Dropout depends only on (seed, step): a resumed run draws the same dropout masks.
  dropout_rng = jax.random.fold_in(rng, state.step)
  normalizers = losses.loss_normalizers(batch)

  def loss_fn(params, micro_batch, micro_rng):
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, *families.model_inputs(micro_batch), deterministic=False,
        rngs={"dropout": micro_rng})
    return losses.pretraining_loss(mlm_logits, nsp_logits, micro_batch,
                                   next_sentence_prediction, normalizers)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (loss, sums), grads = grad_fn(state.params, batch, dropout_rng)
  else:
    def accumulate(totals, micro):
      micro_batch, index = micro
      (loss, sums), grads = grad_fn(state.params, micro_batch,
                                    jax.random.fold_in(dropout_rng, index))
      return jax.tree.map(jnp.add, totals, (loss, sums, grads)), None

    micro_batches = _micro_batches(batch, grad_accum_steps)
    (loss_shape, sums_shape), _ = jax.eval_shape(
        grad_fn, state.params, jax.tree.map(lambda x: x[0], micro_batches), dropout_rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss_shape, sums_shape))
    # Gradients accumulate in the params' dtype (float32) and, like them, sharded.
    zeros += (jax.tree.map(jnp.zeros_like, state.params),)
    (loss, sums, grads), _ = jax.lax.scan(
        accumulate, zeros, (micro_batches, jnp.arange(grad_accum_steps)))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  # A NaN/inf loss or gradient leaves params and optimizer state untouched (nan_guard.py); the
  # step still counts, its batch is consumed.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  params, opt_state = nan_guard.keep_if_finite(finite, (params, opt_state),
                                               (state.params, state.opt_state))
  new_state = train_state.TrainState(step=state.step + 1, params=params, opt_state=opt_state)
  step_metrics = {**sums, "loss": loss, "grad_norm": grad_norm}
  step_metrics = jax.tree.map(lambda v: jnp.where(finite, v, 0.0), step_metrics)
  return new_state, {**step_metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}


def eval_step(params: Any, batch: dict[str, jax.Array], *, model: nn.Module,
              next_sentence_prediction: bool = True) -> dict[str, jax.Array]:
  """Summed eval metrics of one batch, no dropout."""
  mlm_logits, nsp_logits = model.apply({"params": params}, *families.model_inputs(batch))
  _, sums = losses.pretraining_loss(mlm_logits, nsp_logits, batch, next_sentence_prediction)
  return sums


def sum_over_steps(device_metrics: list[dict[str, jax.Array]]) -> dict[str, float]:
  """Each metric summed over a list of steps (or eval batches), fetched in one transfer."""
  host = jax.device_get(device_metrics)
  return {k: float(np.sum([m[k] for m in host])) for k in host[0]}


@dataclasses.dataclass(frozen=True)
class Program:
  """What a run compiles: the model, its optimizer, the state's layout and the jitted steps.

  Attributes:
    abstract_state: The train state as jax.ShapeDtypeStruct (nothing materialised).
    state_shardings: The matching tree of NamedSharding.
    batch_sharding: How a global batch is split over the mesh.
    train_step: jit of `train_step(state, batch, rng)`, the state donated.
    eval_step: jit of `eval_step(params, batch)`.
    next_sentence_prediction: Whether the NSP head is trained (its metrics reported).
  """
  model: nn.Module
  tx: optax.GradientTransformation
  abstract_state: train_state.TrainState
  state_shardings: train_state.TrainState
  batch_sharding: jax.sharding.NamedSharding
  train_step: Any
  eval_step: Any
  next_sentence_prediction: bool

  def evaluate(self, params: Any, eval_batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean losses and accuracies over the eval batches (each host's rows of them)."""
    device_metrics = [
        self.eval_step(params, jax.make_array_from_process_local_data(self.batch_sharding, batch))
        for batch in eval_batches]
    return losses.summarize(sum_over_steps(device_metrics),
                            self.next_sentence_prediction)


def build_program(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  rules: sharding.Rules, next_sentence_prediction: bool) -> Program:
  """The model, optimizer, shardings and jitted steps of `config` on `mesh`.

  Shared by training and by ahead-of-time compilation (aot.py), so that what is compiled for a
  TPU slice is exactly what runs there. Call it under `nn.logical_axis_rules(rules)`; the
  jitted steps must be traced (first call, or `lower`) under `jax.set_mesh(mesh)` too, for the
  activations' sharding constraints.
  """
  model = modeling.BertForPreTraining(modeling.BertConfig.from_config(config.model))
  tx = optim.create_optimizer(config.train)
  shapes = dummy_batch(1, config.data.max_seq_length, config.data.max_predictions_per_seq)
  # Abstract, like everything here: no op may run under a mesh of compile-only devices.
  rng = jax.eval_shape(lambda: train_state.root_key(config))
  abstract_state, state_shardings = train_state.abstract_train_state(model, tx, shapes, rng,
                                                                   mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = sharding.replicated(mesh)
  p_train_step = jax.jit(
      functools.partial(train_step, model=model, tx=tx,
                        next_sentence_prediction=next_sentence_prediction,
                        grad_accum_steps=config.train.grad_accum_steps),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated),
      donate_argnums=(0,))
  p_eval_step = jax.jit(
      functools.partial(eval_step, model=model, next_sentence_prediction=next_sentence_prediction),
      in_shardings=(state_shardings.params, batch_sharding),
      out_shardings=replicated)
  return Program(model=model, tx=tx, abstract_state=abstract_state,
                 state_shardings=state_shardings, batch_sharding=batch_sharding,
                 train_step=p_train_step, eval_step=p_eval_step,
                 next_sentence_prediction=next_sentence_prediction)


def abstract_batch(config: ml_collections.ConfigDict, batch_size: int,
                   batch_sharding: jax.sharding.NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
  """A global batch's shapes and shardings, to lower a step without any data."""
  shapes = jax.eval_shape(functools.partial(
      dummy_batch, batch_size, config.data.max_seq_length, config.data.max_predictions_per_seq))
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
          for k, v in shapes.items()}
