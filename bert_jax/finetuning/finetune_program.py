"""The fine-tuning program: the task model's jitted step, its predictions, and the batch order.

What finetune.py runs, what tpu/aot.py compiles for a TPU slice and what bench/ times, with no
TensorFlow (as pretraining/train_program.py is for pre-training): it runs where only JAX is
installed (GPU boxes; bench/device_check.py). The family (model/families.py) gives the model,
its loss and a batch of the right shapes.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.model import families
from bert_jax.model import modeling
from bert_jax.runtime import nan_guard
from bert_jax.runtime import optim
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state


def create_model(family: str, model_config: modeling.BertConfig, num_labels: int) -> nn.Module:
  """The task family's model (model/families.py)."""
  return families.get(family).build(model_config, num_labels)


def finetune_step(state: train_state.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                  model: nn.Module, tx: optax.GradientTransformation,
                  loss: Callable[[Any, dict[str, jax.Array]], jax.Array]
                  ) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """One optimizer step on the task loss (the family's `loss`)."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    outputs = model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                          batch["input_mask"], deterministic=False, rngs={"dropout": dropout_rng},
                          **modeling.packing_inputs(batch))
    return loss(outputs, batch)

  value, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # A NaN/inf loss or gradient leaves params and optimizer state as they were (nan_guard.py).
  finite = jnp.isfinite(value) & jnp.isfinite(optax.global_norm(grads))
  params, opt_state = nan_guard.keep_if_finite(finite, (params, opt_state),
                                               (state.params, state.opt_state))
  return (train_state.TrainState(step=state.step + 1, params=params, opt_state=opt_state),
          {"loss": jnp.where(finite, value, 0.0),
           "nonfinite": 1.0 - finite.astype(jnp.float32)})


def predict_step(params: Any, batch: dict[str, jax.Array], *, model: nn.Module) -> Any:
  return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                     batch["input_mask"], **modeling.packing_inputs(batch))


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Rows of the global batch of `step` (0-based): epoch after epoch, each a fresh seeded
  shuffle, so a resumed run sees exactly the batches it would have seen."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  indices = np.empty_like(positions)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    indices[epochs == epoch] = order[offsets[epochs == epoch]]
  return indices


@dataclasses.dataclass(frozen=True)
class Program:
  """What a fine-tuning run compiles: the task model, its optimizer, the state's layout and the
  jitted steps (pretraining/train_program.py's Program, for a task head).

  Attributes:
    abstract_state: The train state as jax.ShapeDtypeStruct (nothing materialised).
    state_shardings: The matching tree of NamedSharding.
    batch_sharding: How a global batch is split over the mesh.
    train_step: jit of `finetune_step(state, batch, rng)`, the state donated.
    predict_step: jit of `predict_step(params, batch)`.
  """
  model: nn.Module
  tx: optax.GradientTransformation
  abstract_state: train_state.TrainState
  state_shardings: train_state.TrainState
  batch_sharding: jax.sharding.NamedSharding
  train_step: Any
  predict_step: Any


def build_program(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  rules: sharding.Rules, model_config: modeling.BertConfig, family: str,
                  num_labels: int, example: dict[str, np.ndarray] | None = None) -> Program:
  """The task model, optimizer, shardings and jitted steps of a fine-tuning run on `mesh`.

  Shared by fine-tuning and by ahead-of-time compilation (tpu/aot.py), so that what is compiled
  for a TPU slice is what runs there. Call it under `nn.logical_axis_rules(rules)`; the jitted
  steps are traced (first call, or `lower`) under `jax.set_mesh(mesh)` too.

  Args:
    config: The run's config, its train.num_train_steps and num_warmup_steps resolved (the
      learning-rate schedule).
    mesh: The device mesh (compile-only devices for AOT).
    rules: The logical axis rules.
    model_config: The architecture (a checkpoint's, or config.model's).
    family: The task family's name (model/families.py).
    num_labels: The head's outputs.
    example: One row of the training batch (its structure: packed rows carry the packing
      inputs); None = the family's dummy batch at data.max_seq_length.
  """
  record = families.get(family)
  model = record.build(model_config, num_labels)
  tx = optim.create_optimizer(config.train)
  if example is None:
    example = record.dummy_batch(1, config.data.max_seq_length, num_labels)
  # Abstract, like everything here: no op may run under a mesh of compile-only devices.
  rng = jax.eval_shape(lambda: train_state.root_key(config))
  abstract_state, state_shardings = train_state.abstract_train_state(model, tx, example, rng,
                                                                   mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = sharding.replicated(mesh)
  p_train_step = jax.jit(
      functools.partial(finetune_step, model=model, tx=tx, loss=record.loss),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  p_predict_step = jax.jit(functools.partial(predict_step, model=model),
                           in_shardings=(state_shardings.params, batch_sharding))
  return Program(model=model, tx=tx, abstract_state=abstract_state,
                 state_shardings=state_shardings, batch_sharding=batch_sharding,
                 train_step=p_train_step, predict_step=p_predict_step)


def abstract_batch(example: dict[str, np.ndarray], rows: int,
                   batch_sharding: jax.sharding.NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
  """A global batch of `rows` rows shaped like `example` (one row), to lower a step without
  any data."""
  return {k: jax.ShapeDtypeStruct((rows,) + v.shape[1:], jax.dtypes.canonicalize_dtype(v.dtype),
                                  sharding=batch_sharding)
          for k, v in example.items()}
