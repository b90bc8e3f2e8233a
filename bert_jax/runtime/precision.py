"""What a run's `model.dtype='auto'` and `mesh.cpu_devices=0` become, and why.

Both are decided once, at start-up, from the platform, the CPU's features and the mode; an
explicit value always wins. The measurements behind each rule are in docs/BENCHMARKS.md
("bfloat16 on the CPU's matrix units").

- Compute dtype: model/compute_dtype.py's rule (bfloat16 on TPUs, GPUs and CPUs with AMX-BF16,
  float32 on other CPUs), written into the config so that everything the run builds uses it.
- CPU devices: fine-tuning, encode and predict split a single-process CPU host into one jax
  device per core when their batch sizes divide by that count: their small matmuls use two
  cores poorly inside one XLA program, two programs side by side do better. Pre-training and
  eval keep one device: their vocabulary projection already fills the cores. The numbers are
  the same on any device count (data parallel; threefry dropout).
"""

import os

import ml_collections

from bert_jax.model import compute_dtype

# Modes whose batches are split over the CPU devices by mesh.cpu_devices=0, and the batch-size
# fields each must divide.
_CPU_DEVICE_MODES = {
    "finetune": ("train.batch_size", "train.eval_batch_size"),
    "encode": ("encode.batch_size",),
    "predict": ("predict.batch_size",),
}


def resolve_dtype(config: ml_collections.ConfigDict, platform: str | None = None) -> str:
  """Sets config.model.dtype to what 'auto' chooses on `platform` (default: jax's backend);
  returns the startup line's reason."""
  config.model.dtype, why = compute_dtype.choose(config.model.dtype, platform)
  return why


def _field(config: ml_collections.ConfigDict, path: str) -> int:
  section, name = path.split(".")
  return config[section][name]


def choose_cpu_devices(config: ml_collections.ConfigDict, cores: int) -> tuple[int, str]:
  """(jax CPU devices for this single-process host, why), for mesh.cpu_devices."""
  requested = config.mesh.cpu_devices
  if requested > 0:
    return requested, "mesh.cpu_devices"
  fields = _CPU_DEVICE_MODES.get(config.mode)
  if not fields:
    return 1, f"mesh.cpu_devices=0: config.mode={config.mode!r} gains nothing from more"
  for count in range(min(cores, 8), 1, -1):
    if all(_field(config, path) % count == 0 for path in fields):
      return count, f"mesh.cpu_devices=0: one per core for config.mode={config.mode!r}"
  return 1, (f"mesh.cpu_devices=0: {' and '.join(fields)} do not divide by the {cores} "
             "cores")


def set_cpu_devices(config: ml_collections.ConfigDict, single_process: bool) -> str | None:
  """Before the JAX backend starts: splits this host's CPU into devices as mesh.cpu_devices
  says. Returns why, or None where it does nothing (several processes, or XLA_FLAGS already
  sets a host device count, as tests and users may). Only the CPU backend reads it."""
  if not single_process or "xla_force_host_platform_device_count" in os.environ.get(
      "XLA_FLAGS", ""):
    return None
  count, why = choose_cpu_devices(config, os.cpu_count() or 1)
  if count > 1:
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_num_cpu_devices", count)
  return f"{count} CPU device(s) ({why})"
