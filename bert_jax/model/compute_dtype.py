"""model.dtype='auto': the compute dtype that the platform's matrix units run fastest.

bfloat16 on TPUs and GPUs (their matrix units are bfloat16), and on a CPU with AMX-BF16, where
XLA:CPU runs bfloat16 matmuls on the matrix units and every mode is faster than in float32
(inference 2.2-2.8x, training 1.15-1.4x: docs/BENCHMARKS.md, "bfloat16 on the CPU's matrix
units"). float32 on any other CPU, which has no bfloat16 matrix units: bfloat16 would only add
casts. Params, optimizer state, softmax, LayerNorm statistics and losses stay float32 whatever
is chosen.
"""

import functools
import sys

import jax

DTYPES = ("float32", "bfloat16", "float16")


@functools.cache  # A run resolves 'auto' more than once (main, the mode, a BertConfig).
def cpu_has_amx_bf16() -> bool:
  """Whether this host's CPU has AMX-BF16 (Intel Sapphire Rapids and later); Linux only."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("flags"):
          return "amx_bf16" in line.split()
  except OSError:
    return False
  return False


def choose(requested: str, platform: str | None = None) -> tuple[str, str]:
  """(the compute dtype, why) for `model.dtype=requested` on `platform` ('cpu', 'gpu', 'tpu';
  None = jax's default backend). An explicit dtype always wins."""
  if requested != "auto":
    return requested, "model.dtype"
  platform = platform or jax.default_backend()
  platform = "gpu" if platform in ("cuda", "rocm") else platform
  if platform != "cpu":
    return "bfloat16", f"model.dtype='auto': the {platform.upper()}'s matrix units are bfloat16"
  if cpu_has_amx_bf16():
    return "bfloat16", ("model.dtype='auto': this CPU has AMX-BF16, where bfloat16 is faster "
                        "than float32 in every mode")
  return "float32", ("model.dtype='auto': this CPU has no bfloat16 matrix units (AMX-BF16), "
                     "so bfloat16 would not be faster")
