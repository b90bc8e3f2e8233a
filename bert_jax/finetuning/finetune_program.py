"""The fine-tuning program: the task models, their loss, the jitted step and the batch order.

What finetune.py runs, and what bench/ times, with no TensorFlow (as pretraining/
train_program.py is for pre-training): it runs where only JAX is installed (GPU boxes;
bench/device_check.py).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.interop import hf_heads
from bert_jax.model import heads
from bert_jax.model import modeling
from bert_jax.runtime import nan_guard
from bert_jax.runtime import train_state


def create_model(family: str, model_config: modeling.BertConfig, num_labels: int) -> nn.Module:
  """The task family's model (interop/hf_heads.py: the one HF architecture each maps to)."""
  return hf_heads.model_for(model_config, hf_heads.Head(family, num_labels))


def task_loss(family: str, outputs: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """The family's loss; `batch['weights']` (1 real, 0 padding) when present."""
  weights = batch.get("weights", jnp.ones(batch["input_ids"].shape[:1], jnp.float32))
  if family == "span":
    return heads.span_loss(*outputs, batch["start_positions"], batch["end_positions"], weights,
                           batch.get("example_ids", batch["input_mask"]))
  if family == "token":
    return heads.token_loss(outputs, batch["label_ids"],
                            batch["label_weights"] * weights[:, None])
  if family == "regression":
    return heads.regression_loss(outputs, batch["label_ids"], weights)
  # Classification, and multiple choice: its logits [batch, choices] are a choice's scores.
  return heads.classification_loss(outputs, batch["label_ids"], weights)


def finetune_step(state: train_state.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                  model: nn.Module, tx, family: str
                  ) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """One optimizer step on the task loss."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    outputs = model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                          batch["input_mask"], deterministic=False, rngs={"dropout": dropout_rng},
                          **modeling.packing_inputs(batch))
    return task_loss(family, outputs, batch)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # A NaN/inf loss or gradient leaves params and optimizer state as they were (nan_guard.py).
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
  params, opt_state = nan_guard.keep_if_finite(finite, (params, opt_state),
                                               (state.params, state.opt_state))
  return (train_state.TrainState(step=state.step + 1, params=params, opt_state=opt_state),
          {"loss": jnp.where(finite, loss, 0.0),
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
