"""Optimizers and learning-rate schedule: the original's AdamW, or LAMB for large batches.

Both decay no LayerNorm param and no bias (BERT's weight-decay mask), clip gradients to a
global norm first, and follow the warmup / linear-decay schedule.
"""

import jax
import ml_collections
import optax

from bert_jax import errors

# train.optimizer's values.
OPTIMIZERS = ("adamw", "lamb")


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then linear decay to 0 at num_train_steps."""
  peak = train_config.learning_rate
  warmup = train_config.num_warmup_steps
  decay_steps = max(train_config.num_train_steps - warmup, 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.linear_schedule(peak, 0.0, decay_steps)],
      boundaries=[warmup])


def _names(path) -> list[str]:
  return [str(getattr(key, "key", key)) for key in path]


def weight_decay_mask(params):
  """True where weight decay applies: not on LayerNorm params nor biases (as the original)."""
  def decays(path, _):
    names = _names(path)
    is_bias = names[-1] == "bias" or names[-1].endswith("_bias")
    return not (is_bias or any("LayerNorm" in n for n in names))
  return jax.tree_util.tree_map_with_path(decays, params)


def is_stacked_layer(path) -> bool:
  """Whether a param belongs to the encoder's layers, stacked on a leading 'layers' axis."""
  names = _names(path)
  return any(a == "encoder" and b == "layer" for a, b in zip(names, names[1:]))


def scale_by_layerwise_trust_ratio() -> optax.GradientTransformation:
  """`optax.scale_by_trust_ratio`, with one ratio per layer of the stacked encoder params.

  The encoder's layers are one tensor per param with a leading 'layers' axis (modeling.py's
  scan); the original, and LAMB's "layer-wise" ratio, have one tensor per layer. A single
  ratio over the stack would let one layer's norm set another's step, so the ratio is taken
  for each slice of that axis (vmap); every other param is one tensor and gets one ratio.
  """
  per_tensor = optax.scale_by_trust_ratio()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("the trust ratio needs the params: call update(updates, state, params)")

    def scale(path, update, param):
      ratio_scaled = lambda u, p: per_tensor.update(u, optax.EmptyState(), p)[0]
      if is_stacked_layer(path):
        ratio_scaled = jax.vmap(ratio_scaled)
      return ratio_scaled(update, param)
    return jax.tree_util.tree_map_with_path(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def lamb(learning_rate: optax.ScalarOrSchedule, b1: float, b2: float, eps: float,
         weight_decay: float) -> optax.GradientTransformation:
  """LAMB (You et al. 2019) as BERT's large-batch recipes run it (NVIDIA's, MLPerf's).

  Adam's bias-corrected direction, plus the decoupled decay (not on LayerNorm params or
  biases), scaled per layer by the trust ratio ||w|| / ||update||, then by -learning_rate.
  Unlike `optax.lamb`, the params without decay get no trust ratio either (a LayerNorm scale
  or a bias is rescaled by Adam alone), as NVIDIA's (use_nvlamb=False) and the MLPerf
  reference's LAMB do; and each layer of the stacked encoder gets its own ratio.
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      optax.masked(scale_by_layerwise_trust_ratio(), weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate))


def create_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW or LAMB (train.optimizer) on the warmup/decay schedule."""
  name = train_config.optimizer
  schedule = learning_rate_schedule(train_config)
  if name == "adamw":
    tx = optax.adamw(
        schedule, b1=train_config.adam_b1, b2=train_config.adam_b2,
        eps=train_config.adam_epsilon, weight_decay=train_config.weight_decay,
        mask=weight_decay_mask)
  elif name == "lamb":
    tx = lamb(schedule, b1=train_config.adam_b1, b2=train_config.adam_b2,
              eps=train_config.adam_epsilon, weight_decay=train_config.weight_decay)
  else:
    raise errors.UserError(f"train.optimizer={name!r} is not one of "
                           f"{', '.join(repr(o) for o in OPTIMIZERS)}")
  if train_config.max_grad_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.max_grad_norm), tx)
  return tx
