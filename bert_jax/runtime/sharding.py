"""The one logical-axis vocabulary, the device mesh, and the shardings derived from them.

Model code tags params and activations with logical axis names only; the config's
`logical_axis_rules` map those names onto the mesh axes ('data', 'fsdp', 'tensor'). Changing how
a model is sharded changes rules, never model code.
"""

from collections.abc import Sequence
import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from bert_jax import errors

# Logical axes, as named on params and activations.
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv", "mlp", "vocab", "layers")
# Mesh axes, outermost first: data parallel, fully-sharded data parallel, tensor parallel.
MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def logical_axis_rules(config: ml_collections.ConfigDict) -> Rules:
  """The config's rules as the tuple of pairs that flax expects, checked against the vocabulary."""
  rules = []
  for logical, mesh_axes in config.logical_axis_rules:
    if logical not in LOGICAL_AXES:
      raise errors.UserError(f"logical_axis_rules: unknown logical axis {logical!r}; "
                       f"known: {', '.join(LOGICAL_AXES)}")
    named = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    for axis in named:
      if axis not in MESH_AXES:
        raise errors.UserError(
            f"logical_axis_rules: {logical!r} maps to unknown mesh axis {axis!r}")
    rules.append((logical, tuple(mesh_axes) if isinstance(mesh_axes, (list, tuple))
                  else mesh_axes))
  return tuple(rules)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Sizes of ('data', 'fsdp', 'tensor'); one -1 takes all the devices left."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise errors.UserError("mesh: at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
  for axis, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise errors.UserError(f"mesh.{axis}={size}: must be a positive size or -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise errors.UserError(
          f"mesh: {num_devices} devices do not divide by the fixed axes ({known})")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise errors.UserError(f"mesh: data*fsdp*tensor = {int(np.prod(sizes))} but there are "
                     f"{num_devices} devices")
  return tuple(sizes)


def create_mesh(mesh_config: ml_collections.ConfigDict,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all (global) devices with Auto axes, which linen's gathers need."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_shardings(abstract_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree whose leaves may be boxed with logical axis names.

  Unboxed leaves (optimizer counters, the step) are replicated.
  """
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Leading (batch) dimension split as the 'batch' rule says; everything else whole."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def batch_multiple(mesh: Mesh) -> int:
  """What every global batch's rows must be a multiple of: the data-parallel size (each
  device takes whole rows) and the process count (each host feeds whole rows)."""
  return math.lcm(mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def with_shardings(abstract_tree, shardings):
  """jax.ShapeDtypeStructs carrying `shardings`: what restoring or lowering onto a mesh takes."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


def place(params, shardings, source: str):
  """Host params onto the mesh with `shardings`: the one way every mode does it. Params that
  do not fit them (another architecture) are a UserError naming their source."""
  try:
    return jax.tree.map(jax.device_put, params, shardings)
  except ValueError as e:
    raise errors.UserError(f"{source}: its params do not fit the model or the mesh: "
                           f"{' '.join(str(e).split())}") from e
