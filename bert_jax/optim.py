"""Optimizer and learning-rate schedule: the original's AdamW with BERT's weight-decay mask."""

import jax
import ml_collections
import optax


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then linear decay to 0 at num_train_steps."""
  peak = train_config.learning_rate
  warmup = train_config.num_warmup_steps
  decay_steps = max(train_config.num_train_steps - warmup, 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.linear_schedule(peak, 0.0, decay_steps)],
      boundaries=[warmup])


def weight_decay_mask(params):
  """True where weight decay applies: not on LayerNorm params and not on biases (as the original)."""
  def decays(path, _):
    names = [str(getattr(key, "key", key)) for key in path]
    is_bias = names[-1] == "bias" or names[-1].endswith("_bias")
    return not (is_bias or any("LayerNorm" in n for n in names))
  return jax.tree_util.tree_map_with_path(decays, params)


def create_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (decoupled decay, masked) on the warmup/decay schedule."""
  adamw = optax.adamw(
      learning_rate_schedule(train_config), b1=train_config.adam_b1, b2=train_config.adam_b2,
      eps=train_config.adam_epsilon, weight_decay=train_config.weight_decay,
      mask=weight_decay_mask)
  if train_config.max_grad_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.max_grad_norm), adamw)
  return adamw
