"""Time per compiled XLA op of a jitted step on this machine (jax.profiler), as tables.

    from bench import xla_profile
    xla_profile.report(step, (state, batch, rng), steps=5, warmup=2)

`step` is a jitted function whose first output replaces its first argument (a train state,
donated); the op times are summed over XLA:CPU's worker threads, so on 2 cores they add up to
about twice the wall time. Used by bench/train_step.py and bench/finetune_step.py `--profile`.
"""

import collections
import glob
import re
import tempfile
import time
from typing import Any, Callable

import jax


def op_times(step: Callable[..., Any], args: tuple, steps: int, warmup: int
             ) -> tuple[dict[str, float], float, str]:
  """({op name: ms per step}, wall ms per step under the profiler, the compiled HLO text)."""
  # TensorFlow's copy of the profiler protos: no other package here ships them.
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  state, rest = args[0], args[1:]
  hlo = step.lower(state, *rest).compile().as_text()
  for _ in range(warmup):
    state = jax.block_until_ready(step(state, *rest))[0]
  trace_dir = tempfile.mkdtemp(prefix="xla_profile_")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      state = jax.block_until_ready(step(state, *rest))[0]
  wall_ms = 1e3 * (time.perf_counter() - start) / steps
  space = xplane_pb2.XSpace()
  with open(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0], "rb") as f:
    space.ParseFromString(f.read())
  op_ps: collections.Counter = collections.Counter()
  for plane in space.planes:
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    for line in plane.lines:
      if "XLAEigen" not in line.name:  # The threads that run the compiled program's ops.
        continue
      for event in line.events:
        name = names.get(event.metadata_id, "")
        if not name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
          op_ps[name] += event.duration_ps
  return {name: ps / 1e9 / steps for name, ps in op_ps.items()}, wall_ms, hlo


def report(step: Callable[..., Any], args: tuple, steps: int, warmup: int,
           top: int = 20) -> str:
  """Markdown: op kinds by time, then the `top` single ops with their shapes and sources."""
  ms, wall_ms, hlo = op_times(step, args, steps, warmup)
  total = sum(ms.values())
  kinds: collections.Counter = collections.Counter()
  for name, value in ms.items():
    kinds[re.sub(r"\.\d+$", "", name)] += value
  lines = [f"step: {wall_ms:,.0f} ms wall under the profiler (it slows the step); XLA ops "
           f"{total:,.0f} ms summed over threads. ynn_fusion/dot = matmuls; "
           "dynamic-update-slice/dynamic-slice/wrapped_broadcast = the scan's stacked per-layer "
           "activations; add_select = optimizer update + NaN guard", "",
           "| op kind | ms/step | share |", "|---|---|---|"]
  lines += [f"| {kind} | {value:,.0f} | {value / total:.0%} |"
            for kind, value in kinds.most_common(15)]
  lines += ["", "| op | ms/step | output | from |", "|---|---|---|---|"]
  for name, value in sorted(ms.items(), key=lambda item: -item[1])[:top]:
    found = re.search(r"\n\s*%?" + re.escape(name) + r" = (\S+) .*?op_name=\"([^\"]*)", hlo)
    shape, source = (found.group(1), found.group(2)[-90:]) if found else ("", "")
    lines.append(f"| {name} | {value:,.1f} | {shape} | {source} |")
  return "\n".join(lines)
