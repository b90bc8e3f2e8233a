"""What a pre-training run reports about itself: the start-up summary and the loop's timing.

The loop never waits on the device to time a step (that would serialise host and device):
`Progress` splits host wall time between log lines into time spent getting the next batch
(input), saving checkpoints and evaluating, and the rest, which at steady state is the device's
step time, since the host blocks on the metrics fetch at each log line.
"""

import contextlib
import time
from typing import Iterator

import jax
import ml_collections

from bert_jax.model import flops
from bert_jax.runtime import report


def peak_tflops_per_device(config: ml_collections.ConfigDict) -> tuple[float, str]:
  """The MFU denominator for one device, and where it comes from (for the summary line)."""
  if config.train.peak_tflops_per_device > 0:
    return config.train.peak_tflops_per_device, "train.peak_tflops_per_device"
  device = jax.devices()[0]
  dtype = config.model.dtype
  peak = flops.datasheet_peak_tflops(device.device_kind, dtype)
  if peak:
    return peak, f"datasheet {dtype} peak of {device.device_kind}"
  return (flops.measured_matmul_tflops(dtype, fastest=True),
          f"XLA's fastest {dtype} matmul measured on this device")


def total_peak_flops(peak_tflops_per_device: float) -> float:
  """All devices' peak FLOP/s together, the MFU denominator of a step.

  A CPU's jax devices share its cores (mesh.cpu_devices splits one host into several, run by
  one thread pool), and the matmul measured on one of them already uses every core: a host's
  peak counts once, however many devices it shows.
  """
  if jax.devices()[0].platform == "cpu":
    return peak_tflops_per_device * 1e12 * jax.process_count()
  return peak_tflops_per_device * 1e12 * jax.device_count()


def format_duration(seconds: float) -> str:
  """'1h02m', '3m12s' or '45s': short enough for a log line."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
  """Throughput, MFU, input wait, checkpoint time and ETA over each window between log lines."""

  def __init__(self, step: int, num_train_steps: int, batch_size: int, seq_length: int,
               flops_per_step: float, peak_flops: float):
    """`peak_flops`: all devices together, FLOP/s."""
    self._num_train_steps = num_train_steps
    self._batch_size, self._seq_length = batch_size, seq_length
    self._flops_per_step, self._peak_flops = flops_per_step, peak_flops
    self._start(step)

  def _start(self, step: int) -> None:
    self._step, self._time = step, time.perf_counter()
    self._input = self._checkpoint = self._excluded = 0.0

  @contextlib.contextmanager
  def input(self) -> Iterator[None]:
    """Time spent waiting for the next host batch."""
    start = time.perf_counter()
    yield
    self._input += time.perf_counter() - start

  @contextlib.contextmanager
  def checkpoint(self) -> Iterator[None]:
    """Time spent saving (not training time: left out of the step time)."""
    start = time.perf_counter()
    yield
    self._checkpoint += time.perf_counter() - start

  @contextlib.contextmanager
  def excluded(self) -> Iterator[None]:
    """Time that is neither training nor saving (evaluation): left out of every rate."""
    start = time.perf_counter()
    yield
    self._excluded += time.perf_counter() - start

  def report(self, step: int) -> dict[str, float]:
    """The window's figures since the last report, then starts a new window at `step`."""
    steps = max(step - self._step, 1)
    wall = max(time.perf_counter() - self._time - self._excluded, 1e-9)
    training = max(wall - self._checkpoint, 1e-9)
    step_time = training / steps
    scalars = {
        "step_time": step_time,
        "sequences_per_second": self._batch_size / step_time,
        "tokens_per_second": self._batch_size * self._seq_length / step_time,
        "mfu": self._flops_per_step / step_time / self._peak_flops,
        "input_wait_fraction": min(self._input / training, 1.0),
        "checkpoint_seconds": self._checkpoint,
        "eta_seconds": step_time * (self._num_train_steps - step),
    }
    self._start(step)
    return scalars


class Profiler:
  """A jax.profiler trace of the steps `profile.steps` names ('20-25' or '20'), on each host."""

  def __init__(self, steps: str, logdir: str):
    self._first = self._last = None
    self._logdir, self._active = logdir, False
    if steps:
      first, _, last = steps.partition("-")
      self._first, self._last = int(first), int(last or first)

  def before_step(self, step: int) -> None:
    if step == self._first:
      jax.profiler.start_trace(self._logdir)
      self._active = True

  def after_step(self, step: int, block_on: object) -> None:
    """Stops after `last` once its results exist, so the trace holds the device's work."""
    if self._active and step == self._last:
      jax.block_until_ready(block_on)
      jax.profiler.stop_trace()
      self._active = False
      report.line(f"Profile of steps {self._first}-{self._last} in {self._logdir}")

  def close(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False
