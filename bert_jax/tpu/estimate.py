"""Time and cost of a run on a TPU slice, from the model FLOPs at an assumed MFU.

    python -m bert_jax.tpu.estimate --config=configs/large.py --topology=v5litepod-256 \
        --config.model.dtype=bfloat16 [--mfu=0.45] [--price_per_chip_hour=1.2] [--aot]
    python -m bert_jax.tpu.estimate --config=configs/squad.py --topology=v5litepod-16 \
        --config.model.dtype=bfloat16 --bert_config=bert_config.json [--num_train_examples=N]

Fine-tuning counts train.num_train_steps, else ceil(examples x num_train_epochs / batch_size),
the examples from --num_train_examples or the task's published training set, with the FLOPs of
the task family's head, for the model of --bert_config (bert_config.json or HF config.json),
else config.model's.

An estimate, not a measurement: model FLOPs per step (bert_jax/model/flops.py) over the slice's
datasheet peak times an MFU you assume. Start from the default and replace it with the `mfu`
your own run logs on the same slice and config; the step time, hours and cost scale as 1/MFU.

The default prices are on-demand list prices in USD per chip-hour AS REMEMBERED when this was
written, not looked up: check cloud.google.com/tpu/pricing for your region, and pass
--price_per_chip_hour. Spot and committed-use prices are much lower.

With --aot, bert_jax.tpu.aot first compiles the step for the slice and prints its memory report
(exit status 2 if it does not fit, as bert_jax.tpu.aot).
"""

import dataclasses
import sys

from absl import app
from absl import flags
from jax.sharding import AbstractMesh
import ml_collections
from ml_collections import config_flags

from bert_jax import errors
from bert_jax.config import cli
from bert_jax.config import validation
from bert_jax.finetuning import sweep_program
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.pretraining import phases
from bert_jax.runtime import sharding
from bert_jax.tpu import finetune_task
from bert_jax.tpu import tpu_topology

# An assumption, not a measurement: replace it with the `mfu` metric of your own run (the train
# log line and metrics.jsonl), taken on the same slice, config and mesh.
DEFAULT_MFU = 0.45

# On-demand list prices, USD per chip-hour, as remembered (us-central regions): NOT checked
# against the current price list; see cloud.google.com/tpu/pricing.
LIST_PRICE_PER_CHIP_HOUR = {"v4": 3.22, "v5e": 1.20, "v5p": 4.20, "v6e": 2.70}
PRICE_CAVEAT = "on-demand list price as remembered, check cloud.google.com/tpu/pricing"

# jax's device_kind of each chip generation, as flops.PEAK_TFLOPS keys it. One jax device per
# chip on a real slice (v4 and v5p run their two TensorCores as one 'megacore' device), which
# is what the run's `mfu` metric divides by.
DEVICE_KIND = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5p", "v6e": "TPU v6 lite"}


@dataclasses.dataclass(frozen=True)
class Phase:
  """A stretch of the run with one step shape.

  Attributes:
    num_steps: Optimizer steps in the phase.
    batch_size: Global batch, in sequences.
    seq_length: Tokens per sequence.
    max_predictions_per_seq: Masked positions per sequence the MLM head runs on.
    flops_per_step: Model FLOPs of one step, all chips (flops.pretraining_flops_per_step).
    seconds_per_step: flops_per_step / (chips x peak x MFU).
  """
  num_steps: int
  batch_size: int
  seq_length: int
  max_predictions_per_seq: int
  flops_per_step: int
  seconds_per_step: float

  @property
  def flops(self) -> int:
    return self.num_steps * self.flops_per_step

  @property
  def seconds(self) -> float:
    return self.num_steps * self.seconds_per_step


@dataclasses.dataclass(frozen=True)
class FinetuneRun:
  """How a fine-tuning estimate counted its steps.

  Attributes:
    task: The task.
    num_train_examples: Examples the steps are counted from; 0 = train.num_train_steps set them.
    examples_source: Where that count comes from.
    num_train_epochs: Passes over the examples.
    members: A sweep's runs trained together (config.sweep); 1 for a run alone.
  """
  task: finetune_task.FinetuneTask
  num_train_examples: int
  examples_source: str
  num_train_epochs: float
  members: int = 1


@dataclasses.dataclass(frozen=True)
class Estimate:
  """What `estimate` computed; the totals are properties of the phases.

  Attributes:
    topology: The slice.
    device_kind: jax's device_kind of its chips, as flops.PEAK_TFLOPS keys it.
    dtype: The compute dtype (config.model.dtype) the peak is for.
    peak_tflops_per_chip: The MFU denominator of one chip.
    peak_source: Where that peak comes from (the datasheet, or the config's override).
    mfu: The assumed model-FLOPs utilisation.
    price_per_chip_hour: USD per chip-hour.
    price_source: Where that price comes from.
    phases: The run's phases, in order (one, or two with the phase-2 fields).
    finetune: How a fine-tuning run's steps were counted; None for pre-training.
  """
  topology: tpu_topology.Topology
  device_kind: str
  dtype: str
  peak_tflops_per_chip: float
  peak_source: str
  mfu: float
  price_per_chip_hour: float
  price_source: str
  phases: tuple[Phase, ...]
  finetune: FinetuneRun | None = None

  @property
  def num_steps(self) -> int:
    return sum(phase.num_steps for phase in self.phases)

  @property
  def total_flops(self) -> int:
    return sum(phase.flops for phase in self.phases)

  @property
  def hours(self) -> float:
    return sum(phase.seconds for phase in self.phases) / 3600

  @property
  def chip_hours(self) -> float:
    return self.hours * self.topology.num_chips

  @property
  def cost(self) -> float:
    return self.chip_hours * self.price_per_chip_hour


def run_phases(config: ml_collections.ConfigDict) -> list[tuple[int, int, int, int]]:
  """(steps, batch_size, seq_length, max_predictions_per_seq) of each phase of config's run,
  as the run plans them (bert_jax/pretraining/phases.py).

  Raises:
    errors.UserError: train.phase2_start_step outside the run, as the run itself says.
  """
  start, steps = config.train.phase2_start_step, config.train.num_train_steps
  if start and not 0 < start < steps:
    raise errors.UserError(f"train.phase2_start_step={start} must be between 1 and "
                           f"train.num_train_steps - 1 = {steps - 1} (0 = one phase)")
  return [(phase.last_step - phase.first_step + 1, phase.config.train.batch_size,
           phase.config.data.max_seq_length, phase.config.data.max_predictions_per_seq)
          for phase in phases.plan(config)]


def peak_tflops_per_chip(config: ml_collections.ConfigDict,
                         topology: tpu_topology.Topology) -> tuple[float, str, str]:
  """(peak TFLOP/s of one chip, where it comes from, device_kind): the run's MFU denominator.

  As the run's `mfu` metric takes it (progress.peak_tflops_per_device): train.
  peak_tflops_per_device when set, else the datasheet figure of the chip in model.dtype.

  Raises:
    errors.UserError: No datasheet figure for that dtype (TPUs quote bfloat16 only).
  """
  device_kind = DEVICE_KIND[topology.chip]
  if config.train.peak_tflops_per_device > 0:
    return config.train.peak_tflops_per_device, "train.peak_tflops_per_device", device_kind
  dtype = config.model.dtype
  peak = flops.datasheet_peak_tflops(device_kind, dtype)
  if not peak:
    raise errors.UserError(
        f"model.dtype={dtype!r}: no datasheet peak for {device_kind} in {dtype} (TPUs quote "
        f"bfloat16 only); pass --config.model.dtype=bfloat16, as a TPU run should, or set "
        f"train.peak_tflops_per_device")
  return peak, f"{device_kind} datasheet, {dtype}", device_kind


def _finetune_phase(config: ml_collections.ConfigDict, num_train_examples: int,
                    architecture: modeling.BertConfig | None) -> tuple[FinetuneRun, tuple]:
  """The run's counting, and (steps, batch, seq, 0 predictions, FLOPs per step)."""
  if num_train_examples < 0:
    raise errors.UserError(f"--num_train_examples={num_train_examples}: must be at least 0 (0 = "
                           "the task's published training-set size)")
  task = finetune_task.finetune_task(config)
  model_config = finetune_task.finetune_model(config, architecture)
  if config.train.num_train_steps > 0:
    examples, source = 0, "train.num_train_steps"
  elif num_train_examples:
    examples, source = num_train_examples, "--num_train_examples"
  else:
    examples, source = task.train_examples, f"{task.name}'s published training set"
  steps = finetune_task.finetune_steps(config, examples)
  batch_size, seq_length = config.train.batch_size, config.data.max_seq_length
  members = len(sweep_program.grid(config)) if sweep_program.sweeping(config) else 1
  run = FinetuneRun(task=task, num_train_examples=examples, examples_source=source,
                    num_train_epochs=config.train.num_train_epochs, members=members)
  return run, (steps, batch_size, seq_length, 0,
               members * finetune_task.finetuning_flops_per_step(model_config, task, batch_size,
                                                                 seq_length))


def _price(topology: tpu_topology.Topology, price_per_chip_hour: float | None
           ) -> tuple[float, str]:
  """(USD per chip-hour, where it comes from): the flag's, else the chip's list price."""
  if price_per_chip_hour is None:
    return LIST_PRICE_PER_CHIP_HOUR[topology.chip], f"{topology.chip} {PRICE_CAVEAT}"
  if price_per_chip_hour < 0:
    raise errors.UserError(f"--price_per_chip_hour={price_per_chip_hour}: must be >= 0")
  return price_per_chip_hour, "--price_per_chip_hour"


def estimate(config: ml_collections.ConfigDict, topology_name: str, mfu: float = DEFAULT_MFU,
             price_per_chip_hour: float | None = None, *, num_train_examples: int = 0,
             architecture: modeling.BertConfig | None = None) -> Estimate:
  """Time and cost of config's run (pre-training or fine-tuning) on the named slice.

  Args:
    config: A full run config (configs/*.py), overrides applied.
    topology_name: The compiler's name (v5e:16x16) or a Cloud TPU accelerator type
      (v5litepod-256).
    mfu: Assumed model-FLOPs utilisation, in (0, 1].
    price_per_chip_hour: USD per chip-hour; None = LIST_PRICE_PER_CHIP_HOUR of the chip.
    num_train_examples: Fine-tuning: the training examples; 0 = the task's published count.
    architecture: Fine-tuning: the model's shape (a bert_config.json's); None = config.model.

  Raises:
    errors.UserError: A bad mode, topology, MFU, price, dtype or step count, in one line.
  """
  finetune_task.check_mode(config, architecture)
  topology = tpu_topology.parse(topology_name)
  # The run's own checks, on a mesh of the slice's chips, so that a config the run would refuse
  # gets no estimate (a negative step count once gave "-5 steps ... $-0").
  validation.validate(config, AbstractMesh(sharding.mesh_shape(config.mesh, topology.num_chips),
                                           sharding.MESH_AXES), platform="tpu")
  if not 0 < mfu <= 1:
    raise errors.UserError(f"--mfu={mfu}: must be in (0, 1], e.g. {DEFAULT_MFU}")
  price_per_chip_hour, price_source = _price(topology, price_per_chip_hour)
  peak, peak_source, device_kind = peak_tflops_per_chip(config, topology)
  flops_per_second = topology.num_chips * peak * 1e12 * mfu
  finetune = None
  if config.mode == "finetune":
    finetune, shape = _finetune_phase(config, num_train_examples, architecture)
    shapes = [shape]
  else:
    shapes = [(steps, batch, seq, predictions,
               flops.pretraining_flops_per_step(config.model, batch, seq, predictions))
              for steps, batch, seq, predictions in run_phases(config)]
  phases = tuple(Phase(num_steps=steps, batch_size=batch, seq_length=seq,
                       max_predictions_per_seq=predictions, flops_per_step=step_flops,
                       seconds_per_step=step_flops / flops_per_second)
                 for steps, batch, seq, predictions, step_flops in shapes)
  return Estimate(topology=topology, device_kind=device_kind, dtype=config.model.dtype,
                  peak_tflops_per_chip=peak, peak_source=peak_source, mfu=mfu,
                  price_per_chip_hour=price_per_chip_hour, price_source=price_source,
                  phases=phases, finetune=finetune)


def format_estimate(result: Estimate) -> str:
  """The estimate as the CLI prints it, one figure per line."""
  topology, chips = result.topology, result.topology.num_chips
  peak_pflops = chips * result.peak_tflops_per_chip / 1000
  lines = [
      f"slice      {topology.name} (Cloud TPU {topology.accelerator_type}): {chips} chips x "
      f"{result.peak_tflops_per_chip:g} TFLOP/s ({result.peak_source}) = {peak_pflops:.1f} "
      "PFLOP/s peak",
  ]
  if result.finetune is not None:
    lines += _finetune_lines(result.finetune, result.phases[0], chips)
  for index, phase in enumerate(() if result.finetune else result.phases):
    name = f"phase {index + 1}" if len(result.phases) > 1 else "run"
    per_chip = phase.batch_size / chips
    lines.append(
        f"{name:<10} {phase.num_steps:,} steps of batch {phase.batch_size:,} x seq "
        f"{phase.seq_length} ({phase.max_predictions_per_seq} predictions; {per_chip:g} "
        f"sequence{'' if per_chip == 1 else 's'} per chip): {phase.flops_per_step:.3e} model "
        f"FLOPs per step (3x forward, bert_jax/model/flops.py), {_seconds(phase.seconds_per_step)} "
        "per step")
  hours = result.hours
  lines += [
      f"total      {result.total_flops:.3e} model FLOPs in {result.num_steps:,} steps",
      f"mfu        {result.mfu:g} ASSUMED (--mfu): replace with the `mfu` your run logs",
      f"time       {hours:,.2f} hours ({hours / 24:,.2f} days) on {chips} chips" if hours >= 0.5
      else f"time       {hours * 60:,.1f} minutes ({hours:.2f} hours) on {chips} chips",
      f"chip-hours {_amount(result.chip_hours)}",
      f"cost       ${_amount(result.cost)} at ${result.price_per_chip_hour:.2f} per chip-hour "
      f"({result.price_source})",
      "An estimate from the model FLOP formula at an assumed MFU, not a measurement.",
  ]
  return "\n".join(lines)


def _finetune_lines(run: FinetuneRun, phase: Phase, chips: int) -> list[str]:
  """How a fine-tuning estimate counted its steps, and its step."""
  task = run.task
  steps = (f"ceil({run.num_train_examples:,} examples ({run.examples_source}) x "
           f"{run.num_train_epochs:g} epochs / batch {phase.batch_size:,}) = {phase.num_steps:,}"
           if run.num_train_examples else f"{phase.num_steps:,} (train.num_train_steps)")
  if task.steps_note and run.num_train_examples:
    steps += f" ({task.steps_note})"
  choices = f" x {task.choices} choices" if task.choices > 1 else ""
  members = f" x {run.members} sweep members" if run.members > 1 else ""
  per_chip = phase.batch_size * task.choices * run.members / chips
  return [
      f"steps      {steps}",
      f"run        {phase.num_steps:,} steps of batch {phase.batch_size:,}{choices} x seq "
      f"{phase.seq_length}{members} ({task.name}, family {task.family}; {per_chip:g} "
      f"sequence{'' if per_chip == 1 else 's'} per chip, unpacked): "
      f"{phase.flops_per_step:.3e} model FLOPs per step (3x forward, bert_jax/model/flops.py), "
      f"{_seconds(phase.seconds_per_step)} per step",
  ]


def _amount(value: float) -> str:
  # Cents and hundredths for a fine-tuning run's small figures, which whole units made 0.
  return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _seconds(seconds: float) -> str:
  return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# ---- Command line ----


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config, topology_name = flags.FLAGS.config, flags.FLAGS.topology
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  # aot's CLI environment (libtpu quiet and off any real TPU, jax on the CPU), before validation
  # asks jax for the process count.
  aot.set_environment(topology_name)
  try:
    architecture = finetune_task.read_architecture(flags.FLAGS.bert_config)
    # Before any compile: a bad topology, MFU or dtype costs nothing.
    result = estimate(config, topology_name, flags.FLAGS.mfu, flags.FLAGS.price_per_chip_hour,
                      num_train_examples=flags.FLAGS.num_train_examples,
                      architecture=architecture)
    report = None
    if flags.FLAGS.aot:
      report = aot.compile_for_topology(config, topology_name, architecture)
      print(aot.format_report(report, config), flush=True)
      if len(result.phases) > 1:
        phase2 = result.phases[1]
        print("(phase 1 only; phase 2: add --config.train.phase2_start_step=0 "
              f"--config.train.batch_size={phase2.batch_size} --config.data.max_seq_length="
              f"{phase2.seq_length} --config.data.max_predictions_per_seq="
              f"{phase2.max_predictions_per_seq})", flush=True)
      print(flush=True)
  except errors.UserError as e:
    sys.exit(f"bert_jax: error: {e}")
  print(format_estimate(result), flush=True)
  if report is not None and not report.fits:
    sys.exit(2)


if __name__ == "__main__":
  # Defined only when run as a program, as in bert_jax.tpu.aot.
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/large.py; override fields with --config.a.b=v.",
      lock_config=True)
  flags.DEFINE_string("topology", None, f"TPU slice: {tpu_topology.ACCEPTED_FORMS}.")
  flags.DEFINE_float("mfu", DEFAULT_MFU,
                     "Assumed model-FLOPs utilisation, in (0, 1]. The default is an assumption: "
                     "replace it with the `mfu` metric your own run logs.")
  flags.DEFINE_float("price_per_chip_hour", None,
                     "USD per chip-hour. Default: the chip's on-demand list price as remembered "
                     f"({LIST_PRICE_PER_CHIP_HOUR}), check cloud.google.com/tpu/pricing.")
  flags.DEFINE_string("bert_config", None,
                      "Fine-tuning: the model's shape from a bert_config.json or an HF "
                      "config.json (no checkpoint needed); default: config.model.")
  flags.DEFINE_integer("num_train_examples", 0,
                       "Fine-tuning: training examples the steps are counted from (x epochs / "
                       "batch); 0 = the task's published training-set size.")
  flags.DEFINE_bool("aot", False,
                    "First AOT-compile the step for the slice (bert_jax.tpu.aot, needs libtpu) and "
                    "print its memory report; exit status 2 if it does not fit.")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main, flags_parser=cli.parse_flags)
