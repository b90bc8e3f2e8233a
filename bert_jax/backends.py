"""Which of jax's backends a command starts: no TPU runtime on a host without TPU chips.

With libtpu installed (jax[tpu], which tpu.aot needs to compile for TPUs from any host), jax
tries the TPU backend on every host and quietly falls back when it fails. On a host without TPU
chips libtpu first prints errors of its own to stderr ("Failed to find host bounds for
accelerator type", "unexpected worker hostname ... from env var TPU_WORKER_HOSTNAMES"), which
read like a broken run. Training commands skip that backend there; jax's own check for TPU
chips on the PCI bus decides, as it does for its own TPU set-up.
"""

import os

import jax


def skip_tpu_without_chips() -> str | None:
  """Before the backend starts: on a host without TPU chips (nor a GPU), only the CPU backend.

  Returns the platforms set, or None where it leaves jax's choice alone: JAX_PLATFORMS (or
  jax_platforms) given, JAX_FORCE_TPU_INIT set, TPU chips present, a GPU visible (jax probes
  GPUs its own way), or jax's private hardware probe not where jax 0.12 has it.
  """
  if jax.config.jax_platforms or "JAX_FORCE_TPU_INIT" in os.environ:
    return None
  try:
    # pylint: disable=import-outside-toplevel
    from jax._src import hardware_utils  # jax's own probe; no backend is started.
    chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
    gpus = hardware_utils.has_visible_nvidia_gpu() or hardware_utils.num_available_amd_gpus(1)
  except (ImportError, AttributeError, OSError):
    return None
  if chips or gpus:
    return None
  jax.config.update("jax_platforms", "cpu")
  return "cpu"
