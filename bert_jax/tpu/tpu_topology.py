"""TPU slice names: Cloud TPU accelerator types -> the TPU compiler's topology names, and HBM.

The compiler (libtpu, through `jax.experimental.topologies.get_topology_desc`) names a slice by
chip generation and torus shape in chips: `v5e:4x4`, `v6e:4x4`, `v4:2x2x1`, `v5p:2x2x2`. Users
rent slices by Cloud TPU accelerator type, which counts chips for v5e/v6e (`v5litepod-16`,
`v6e-16`) but TensorCores for v4/v5p (two per chip: `v4-32` and `v5p-32` are 16 chips). Both
forms are accepted here; only this module knows the difference.
"""

import dataclasses
import re

from bert_jax import errors

_GIB = 2**30

# HBM per chip (Cloud TPU system architecture pages): v4 32 GiB, v5e 16 GiB, v5p 95 GiB,
# v6e (Trillium) 32 GiB.
HBM_BYTES_PER_CHIP = {"v4": 32 * _GIB, "v5e": 16 * _GIB, "v5p": 95 * _GIB, "v6e": 32 * _GIB}
# v5e and v6e are 2D tori of single-TensorCore chips; v4 and v5p 3D tori of two-core chips.
_TORUS_DIMS = {"v4": 3, "v5e": 2, "v5p": 3, "v6e": 2}
_CORES_PER_CHIP = {"v4": 2, "v5e": 1, "v5p": 2, "v6e": 1}
# Cloud accelerator-type prefix -> chip generation (v5e is sold as 'v5litepod').
_CLOUD_PREFIXES = {"v5litepod": "v5e", "v5e": "v5e", "v6e": "v6e", "v4": "v4", "v5p": "v5p"}
# Slices bigger than this get no default shape (the biggest ones are not powers of two); the
# compiler's form still takes them.
_MAX_DEFAULT_CHIPS = {"v4": 4096, "v5e": 256, "v5p": 4096, "v6e": 256}

ACCEPTED_FORMS = ("the compiler's v5e:4x4, v6e:4x4, v4:2x2x1, v5p:2x2x2, or a Cloud TPU "
                  "accelerator type: v5litepod-16 (= v5e-16), v6e-16, v4-32, v5p-16")


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice as the compiler and as Cloud TPU name it.

  Attributes:
    name: The compiler's topology name, e.g. 'v5e:4x4'.
    chip: Chip generation: 'v4', 'v5e', 'v5p' or 'v6e'.
    shape: Torus shape in chips, e.g. (4, 4) or (2, 2, 1).
    accelerator_type: The Cloud TPU accelerator type of the same slice, e.g. 'v5litepod-16'.
  """
  name: str
  chip: str
  shape: tuple[int, ...]
  accelerator_type: str

  @property
  def num_chips(self) -> int:
    return _product(self.shape)

  @property
  def hbm_bytes_per_chip(self) -> int:
    return HBM_BYTES_PER_CHIP[self.chip]


def default_shape(chip: str, num_chips: int) -> tuple[int, ...] | None:
  """The torus shape Cloud TPU gives a slice of `num_chips` chips, or None if it has none.

  Cloud's shapes grow from the one-host 2x2 (2x2x1) by doubling the shortest side, the last one
  among equals: 2x2 -> 2x4 -> 4x4 -> 4x8 -> ... -> 16x16, and 2x2x1 -> 2x2x2 -> 2x2x4 -> 2x4x4
  -> 4x4x4 -> 4x4x8 -> ...
  """
  dims = _TORUS_DIMS[chip]
  if dims == 2 and num_chips == 1:
    return (1, 1)
  shape = [2, 2] if dims == 2 else [2, 2, 1]
  while _product(shape) < min(num_chips, _MAX_DEFAULT_CHIPS[chip]):
    shortest = min(shape)
    index = max(i for i, size in enumerate(shape) if size == shortest)
    shape[index] *= 2
  return tuple(shape) if _product(shape) == num_chips else None


def parse(name: str) -> Topology:
  """The slice that `name` means, in either form (see ACCEPTED_FORMS).

  Raises:
    errors.UserError: One line listing the accepted forms, for any other name.
  """
  text = name.strip().lower()
  compiler_form = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+)*)", text)
  if compiler_form:
    chip = compiler_form.group(1)
    shape = tuple(int(size) for size in compiler_form.group(2).split("x"))
    if len(shape) != _TORUS_DIMS[chip] or min(shape) < 1:
      raise errors.UserError(
          f"topology {name!r}: {chip} slices are {_TORUS_DIMS[chip]}D tori, e.g. "
          f"{_example(chip)}; accepted: {ACCEPTED_FORMS}")
    return _topology(chip, shape)
  cloud_form = re.fullmatch(r"(v5litepod|v5e|v6e|v4|v5p)-(\d+)", text)
  if cloud_form:
    chip = _CLOUD_PREFIXES[cloud_form.group(1)]
    count = int(cloud_form.group(2))
    cores_per_chip = _CORES_PER_CHIP[chip]
    shape = default_shape(chip, count // cores_per_chip) if count % cores_per_chip == 0 else None
    if shape is None:
      raise errors.UserError(
          f"topology {name!r}: no standard {chip} slice has {count} "
          f"{'TensorCores' if cores_per_chip > 1 else 'chips'}; give the shape in the "
          f"compiler's form, e.g. {_example(chip)}")
    return _topology(chip, shape)
  raise errors.UserError(f"unknown TPU topology {name!r}; accepted: {ACCEPTED_FORMS}")


def _topology(chip: str, shape: tuple[int, ...]) -> Topology:
  num_chips = _product(shape)
  prefix = "v5litepod" if chip == "v5e" else chip
  return Topology(name=f"{chip}:{'x'.join(map(str, shape))}", chip=chip, shape=shape,
                  accelerator_type=f"{prefix}-{num_chips * _CORES_PER_CHIP[chip]}")


def _example(chip: str) -> str:
  return f"{chip}:{'x'.join(map(str, default_shape(chip, 16)))}"


def _product(sizes) -> int:
  num = 1
  for size in sizes:
    num *= size
  return num
