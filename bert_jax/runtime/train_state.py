"""The train state every mode steps: its shape, its init, its layout over the mesh, its key.

No TensorFlow: pre-training's compiled step (train_program.py), fine-tuning's and the
accelerator check all build on it.
"""

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax.model import families
from bert_jax.runtime import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def init_params(rng: jax.Array, model: nn.Module, batch: dict[str, jax.Array]):
  """Params as initialised by the model, still boxed with their logical axis names."""
  return model.init({"params": rng}, *families.model_inputs(batch))["params"]


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       batch: dict[str, jax.Array]) -> TrainState:
  params = nn.meta.unbox(init_params(rng, model, batch))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation,
                         batch: dict[str, jax.Array], rng: jax.Array, mesh, rules
                         ) -> tuple[TrainState, TrainState]:
  """The state's shapes and its shardings, with nothing materialised.

  Params are sharded by their logical axis names; each optimizer slot (Adam's mu, nu) like the
  param it belongs to; scalars (step, counts) are replicated.

  Returns:
    (abstract state of jax.ShapeDtypeStruct, matching tree of NamedSharding).
  """
  param_shardings = sharding.logical_shardings(
      jax.eval_shape(functools.partial(init_params, model=model, batch=batch), rng), mesh, rules)
  abstract_state = jax.eval_shape(
      functools.partial(create_train_state, model=model, tx=tx, batch=batch), rng)
  state_shardings = TrainState(
      step=sharding.replicated(mesh), params=param_shardings,
      opt_state=optax.tree_utils.tree_map_params(
          tx, lambda _, s: s, abstract_state.opt_state, param_shardings,
          transform_non_params=lambda _: sharding.replicated(mesh)))
  return abstract_state, state_shardings


def root_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The run's root PRNG key: `config.seed` with the generator `config.rng_impl`."""
  return jax.random.key(config.seed, impl=config.rng_impl)
