"""A sweep's members as one compiled program: K fine-tuning runs trained together.

BERT's authors chose each task's learning rate on dev from a grid and, on small data sets, kept
the best of several restarts. Each member of a sweep is the run `finetune_program` makes alone
with its learning rate and seed: the same initial params (its seed's classifier init), the same
dropout stream and the same data order (both functions of its seed). Here the members' train
states are stacked on a leading member axis and one jitted step runs `finetune_step` over that
axis (jax.vmap): a small task's batch fills neither a TPU chip nor a GPU, K of them do better.

The learning rate: both schedules are the peak times a shape (runtime/optim.py), so the
optimizer is built once with a peak of 1 and each member's updates are then scaled by its own
peak, the last transformation of its chain. The result differs from a run alone only in float32
rounding (the product is taken in another order, and stacked matmuls accumulate in another
order).

On a mesh whose 'data' axis divides the number of members, the member axis is split over it:
each device (a CPU core, a chip) trains its own members, with no communication at all. A task's
batch of 32 is too small to gain from data parallelism; whole members are the better unit.
Otherwise the members stay on one device.
"""

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import errors
from bert_jax.config import validation
from bert_jax.finetuning import finetune_program
from bert_jax.model import families
from bert_jax.model import modeling
from bert_jax.runtime import optim
from bert_jax.runtime import train_state


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of the sweep: its peak learning rate and its seed (config.seed of a run alone)."""
  learning_rate: float
  seed: int


def members(learning_rates: Sequence[float], seeds: Sequence[int]) -> tuple[Member, ...]:
  """The grid, learning rate by learning rate: (lr0, seed0), (lr0, seed1), ..."""
  return tuple(Member(float(lr), int(seed)) for lr in learning_rates for seed in seeds)


def sweeping(config: ml_collections.ConfigDict) -> bool:
  """Whether a fine-tuning config asks for a sweep (more than one run)."""
  return "sweep" in config and (bool(config.sweep.learning_rates) or config.sweep.seeds > 1)


def grid(config: ml_collections.ConfigDict) -> tuple[Member, ...]:
  """The members: config.sweep's learning rates (or train.learning_rate) x its seeds.

  Raises:
    errors.UserError: A learning rate that is not a positive number, or seeds < 1.
  """
  validation.check_sweep(config.sweep)
  rates = config.sweep.learning_rates or (config.train.learning_rate,)
  if isinstance(rates, (int, float)):
    rates = (rates,)
  if jax.process_count() > 1:
    raise errors.UserError("config.sweep: a sweep runs in one process (its members split over "
                           "that host's devices); run it without --num_processes")
  return members(rates, range(config.seed, config.seed + config.sweep.seeds))


def member_optimizer(unit_tx: optax.GradientTransformation,
                     learning_rate: jax.Array) -> optax.GradientTransformation:
  """`unit_tx` (the run's optimizer with a peak of 1) with its updates scaled by the member's
  peak: the optimizer of a run alone with that peak, to float32 rounding."""
  return optax.chain(unit_tx, optax.scale(learning_rate))


def sweep_step(states: train_state.TrainState, batches: dict[str, jax.Array], rngs: jax.Array,
               learning_rates: jax.Array, *, model: nn.Module,
               unit_tx: optax.GradientTransformation,
               loss: Callable[[Any, dict[str, jax.Array]], jax.Array]
               ) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """One optimizer step of every member: `finetune_step` over the leading member axis of the
  params and optimizer states, batches ([members, batch, ...]), dropout keys and peaks. The
  step count is one scalar, as in a run alone (the members step together).

  Metrics: each member's `loss` and `member_nonfinite` ([members]), and `nonfinite` (a
  scalar: 1 when every member's step was not finite, the loop's NaN policy then applies to
  the sweep; one member's is the sweep's to report, finetuning/sweep.py).
  """

  def member_step(state, batch, rng, learning_rate):
    return finetune_program.finetune_step(
        state, batch, rng, model=model, tx=member_optimizer(unit_tx, learning_rate), loss=loss)

  axes = train_state.TrainState(step=None, params=0, opt_state=0)
  states, metrics = jax.vmap(member_step, in_axes=(axes, 0, 0, 0), out_axes=(axes, 0))(
      states, batches, rngs, learning_rates)
  return states, {"loss": metrics["loss"], "member_nonfinite": metrics["nonfinite"],
                  "nonfinite": jnp.min(metrics["nonfinite"])}


def stack(trees: Sequence[Any]) -> Any:
  """The members' trees (params, keys) stacked on a new leading member axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def stack_states(states: Sequence[train_state.TrainState]) -> train_state.TrainState:
  """The members' states as the sweep steps them: one step count, the rest stacked."""
  # A copy of the step count: the members' own states may be donated later.
  return train_state.TrainState(step=jnp.array(states[0].step),
                                params=stack([s.params for s in states]),
                                opt_state=stack([s.opt_state for s in states]))


def unstack(tree: Any, member: int) -> Any:
  """Member `member`'s slice of a stacked tree (params, optimizer state)."""
  return jax.tree.map(lambda leaf: leaf[member], tree)


def abstract_states(abstract_state: train_state.TrainState,
                    num_members: int) -> train_state.TrainState:
  """The stacked states' shapes, from one member's (a run alone's)."""
  stacked = lambda x: jax.ShapeDtypeStruct((num_members,) + x.shape, x.dtype)
  return train_state.TrainState(step=abstract_state.step,
                                params=jax.tree.map(stacked, abstract_state.params),
                                opt_state=jax.tree.map(stacked, abstract_state.opt_state))


@dataclasses.dataclass(frozen=True)
class SweepProgram:
  """What a sweep compiles: the model, the optimizer with a unit peak, and the jitted steps.

  Attributes:
    members: The runs, in the order of the member axis.
    model: The task model (every member's).
    unit_tx: The run's optimizer with train.learning_rate=1 (member_optimizer scales it).
    train_step: jit of `sweep_step(states, batches, rngs, learning_rates)`, states donated.
    predict_step: jit of the model over stacked params and one batch shared by every member:
      outputs with a leading member axis.
  """
  members: tuple[Member, ...]
  model: nn.Module
  unit_tx: optax.GradientTransformation
  train_step: Any
  predict_step: Any

  @property
  def learning_rates(self) -> jax.Array:
    return jnp.array([m.learning_rate for m in self.members], jnp.float32)

  def init_state(self, member: Member, example: dict[str, np.ndarray],
                 config: ml_collections.ConfigDict,
                 initial_params: Callable[[Any], Any] = lambda params: params
                 ) -> tuple[train_state.TrainState, jax.Array]:
    """(member's new state, its dropout key): what a run alone with its seed starts from.

    `initial_params` replaces the fresh params as fine-tuning's does (a pre-trained encoder,
    the member's own classifier init kept)."""
    init_rng, dropout_rng = jax.random.split(
        train_state.root_key(_with_seed(config, member.seed)))
    tx = member_optimizer(self.unit_tx, jnp.float32(member.learning_rate))
    state = jax.jit(functools.partial(train_state.create_train_state, model=self.model, tx=tx,
                                      batch=example))(init_rng)
    return state.replace(params=initial_params(state.params)), dropout_rng

  def abstract_member_state(self, example: dict[str, np.ndarray],
                            rng: jax.ShapeDtypeStruct) -> train_state.TrainState:
    """One member's state as shapes (nothing materialised): what abstract_states stacks."""
    tx = member_optimizer(self.unit_tx, jnp.float32(1.0))
    return jax.eval_shape(functools.partial(train_state.create_train_state, model=self.model,
                                            tx=tx, batch=example), rng)

  def batches(self, features: dict[str, np.ndarray], batch_size: int,
              step: int) -> dict[str, np.ndarray]:
    """Every member's batch of `step` (0-based), each in its own seed's order:
    [members, batch_size, ...]."""
    num_rows = len(features["input_ids"])
    indices = np.stack([finetune_program.batch_indices(num_rows, batch_size, step, m.seed)
                        for m in self.members])  # [members, batch_size]
    return {name: value[indices] for name, value in features.items()}


def _with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    copy.seed = seed
  return copy


def member_sharding(mesh: jax.sharding.Mesh, num_members: int) -> jax.sharding.NamedSharding:
  """The member axis split over the mesh's 'data' axis when that divides the members; else
  every member on every device (replicated)."""
  split = "data" in mesh.shape and num_members % mesh.shape["data"] == 0
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data" if split else None))


def state_shardings(mesh: jax.sharding.Mesh, num_members: int,
                    abstract: train_state.TrainState | None = None) -> train_state.TrainState:
  """How the stacked states lie: the step count replicated, the rest by member_sharding. A
  prefix of the state's tree, or with `abstract` (the stacked shapes) the whole tree (what a
  restore needs)."""
  split = member_sharding(mesh, num_members)
  params, opt_state = split, split
  if abstract is not None:
    params = jax.tree.map(lambda _: split, abstract.params)
    opt_state = jax.tree.map(lambda _: split, abstract.opt_state)
  return train_state.TrainState(
      step=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), params=params,
      opt_state=opt_state)


def build_sweep_program(config: ml_collections.ConfigDict, model_config: modeling.BertConfig,
                        family: str, num_labels: int, sweep_members: Sequence[Member],
                        mesh: jax.sharding.Mesh | None = None) -> SweepProgram:
  """The task model, the unit-peak optimizer and the jitted member-stacked steps.

  Args:
    config: A fine-tuning config, its train.num_train_steps and num_warmup_steps resolved (the
      schedule's shape); its train.learning_rate and seed are each member's.
    model_config: The architecture.
    family: The task family's name (model/families.py).
    num_labels: The head's outputs.
    sweep_members: The runs (`members(...)`).
    mesh: Where the members train (member_sharding); None: jax's default placement.
  """
  record = families.get(family)
  model = record.build(model_config, num_labels)
  unit = config.train.copy_and_resolve_references()
  with unit.unlocked():
    unit.learning_rate = 1.0
  unit_tx = optim.create_optimizer(unit)
  shardings = {}
  if mesh is not None:
    split, states = member_sharding(mesh, len(sweep_members)), state_shardings(
        mesh, len(sweep_members))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    # The batches lead with the member axis too; the keys and peaks go as they come (the
    # loop hands its key replicated).
    shardings = {"in_shardings": (states, split, None, None),
                 "out_shardings": (states, replicated)}
  train_step = jax.jit(functools.partial(sweep_step, model=model, unit_tx=unit_tx,
                                         loss=record.loss), donate_argnums=(0,), **shardings)
  predict_step = jax.jit(jax.vmap(functools.partial(finetune_program.predict_step, model=model),
                                  in_axes=(0, None)))
  return SweepProgram(members=tuple(sweep_members), model=model, unit_tx=unit_tx,
                      train_step=train_step, predict_step=predict_step)
