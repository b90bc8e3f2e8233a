"""Optimizers and learning-rate schedules: AdamW (the original's, or bias-corrected), or LAMB
for large batches.

Both decay no LayerNorm param and no bias (BERT's weight-decay mask) and clip gradients to a
global norm first. Two schedules (train.schedule):

  'original'            google-research/bert's optimization.py: the rate decays linearly from
                        the peak to 0 over all num_train_steps, counted from step 0
                        (polynomial_decay, power 1); during warmup peak * step / warmup
                        replaces it, so at the end of warmup it is peak * (1 - warmup / steps).
  'warmup_then_decay'   linear warmup to the full peak, then linear decay to 0 over the steps
                        left (transformers' get_linear_schedule_with_warmup).

train.adam_bias_correction=False is the original's AdamWeightDecayOptimizer: m / (sqrt(v) +
eps), with no correction of m and v for their zero start; True is optax's AdamW.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax import errors

# train.optimizer's values.
OPTIMIZERS = ("adamw", "lamb")
# train.schedule's values.
SCHEDULES = ("original", "warmup_then_decay")


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate of each step (0-based), as train.schedule says (module docstring)."""
  peak = train_config.learning_rate
  warmup = train_config.num_warmup_steps
  steps = max(train_config.num_train_steps, 1)
  if train_config.schedule == "original":
    decay = optax.linear_schedule(peak, 0.0, steps)
    if warmup <= 0:
      return decay
    return lambda step: jnp.where(step < warmup, peak * step / warmup, decay(step))
  decay_steps = max(train_config.num_train_steps - warmup, 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.linear_schedule(peak, 0.0, decay_steps)],
      boundaries=[warmup])


def scale_by_adam_without_bias_correction(b1: float, b2: float,
                                          eps: float) -> optax.GradientTransformation:
  """The original's Adam direction m / (sqrt(v) + eps), m and v not corrected for their zero
  start. Its state is optax.scale_by_adam's (count, mu, nu), so either restores the other's."""
  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree_utils.tree_update_moment(updates, state.mu, b1, 1)
    nu = optax.tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return direction, optax.ScaleByAdamState(
        count=optax.safe_increment(state.count), mu=mu, nu=nu)

  return optax.GradientTransformation(optax.scale_by_adam(b1, b2, eps).init, update_fn)


def adam_direction(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam's update direction, with or without bias correction (train.adam_bias_correction)."""
  b1, b2, eps = train_config.adam_b1, train_config.adam_b2, train_config.adam_epsilon
  if train_config.adam_bias_correction:
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  return scale_by_adam_without_bias_correction(b1, b2, eps)


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


def lamb(learning_rate: optax.ScalarOrSchedule, direction: optax.GradientTransformation,
         weight_decay: float) -> optax.GradientTransformation:
  """LAMB (You et al. 2019) as BERT's large-batch recipes run it: apex's FusedLAMB with its
  defaults (bias_correction=True, use_nvlamb=False, max_grad_norm=1.0), the optimizer of
  NVIDIA's PyTorch BERT and of MLPerf's BERT submissions (tests/test_optim.py writes its
  formulas out).

  Adam's direction (`direction`: bias-corrected for that recipe, train.adam_bias_correction),
  plus the decoupled decay (not on LayerNorm params or biases), scaled per layer by the trust
  ratio ||w|| / ||update|| (1 where a norm is 0), then by -learning_rate. Unlike `optax.lamb`,
  and unlike NVIDIA's TensorFlow BERT LAMB, the params without decay get no trust ratio either
  (a LayerNorm scale or a bias is rescaled by Adam alone); and each layer of the stacked encoder
  gets its own ratio.
  """
  return optax.chain(
      direction,
      optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      optax.masked(scale_by_layerwise_trust_ratio(), weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate))


def create_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW or LAMB (train.optimizer) on train.schedule.

  AdamW is optax.adamw's chain (Adam's direction, the masked decoupled decay, the rate), with
  the direction corrected for bias or not (train.adam_bias_correction).
  """
  name = train_config.optimizer
  schedule = learning_rate_schedule(train_config)
  direction = adam_direction(train_config)
  if name == "adamw":
    tx = optax.chain(
        direction, optax.add_decayed_weights(train_config.weight_decay, mask=weight_decay_mask),
        optax.scale_by_learning_rate(schedule))
  elif name == "lamb":
    tx = lamb(schedule, direction, weight_decay=train_config.weight_decay)
  else:
    raise errors.UserError(f"train.optimizer={name!r} is not one of "
                           f"{', '.join(repr(o) for o in OPTIMIZERS)}")
  if train_config.max_grad_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.max_grad_norm), tx)
  return tx
