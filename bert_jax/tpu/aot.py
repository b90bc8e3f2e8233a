"""Ahead-of-time compile of the train step for a TPU slice, on any Linux x86_64 host, no TPU.

    python -m bert_jax.tpu.aot --config=configs/large.py --topology=v5e:16x16 [--config.a.b=v ...]
    python -m bert_jax.tpu.aot --config=configs/squad.py --topology=v5e:4x4 \
        --bert_config=bert_config.json --config.model.dtype=bfloat16

Compiles exactly what `main` would run on the slice (train_program.build_program, or for a
fine-tuning config finetune_program.build_program with the task's head: the same shardings and
donation) with the TPU compiler from libtpu, and reports the compile time, the memory each
device needs at peak against its HBM, and the model FLOPs of a step: whether a config fits
before any pod is rented. Fine-tuning needs no checkpoint: the model's shape comes from
--bert_config (the original's bert_config.json or an HF config.json), else config.model. Exit
status: 0 fits, 2 does not fit, 1 bad config or topology.
"""

import dataclasses
import importlib.util
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from bert_jax import errors
from bert_jax.config import cli
from bert_jax.config import validation
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import sweep_program
from bert_jax.model import families
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from bert_jax.tpu import finetune_task
from bert_jax.tpu import tpu_topology

_GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Memory:
  """Per-device bytes of the compiled step, from `compiled.memory_analysis()`.

  The arguments (train state, batch, rng) are live for the whole step. The new state is written
  into the donated old state's buffers: those output bytes are counted in both `argument_bytes`
  and `output_bytes`, and once more in `alias_bytes`, so they are subtracted once. Temporaries
  are the compiler's scratch heap, already sized at its own peak; the program's code sits in
  HBM too. Hence, live at peak:

    total = arguments + outputs - aliased + temporaries + generated code.

  `compiler_peak_bytes` is the compiler's own heap-simulated peak, for comparison: it can be a
  little below `total` (not every argument is live at the temporaries' peak) and, for tiny
  programs, above it (fixed reservations).
  """
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  generated_code_bytes: int
  compiler_peak_bytes: int

  @property
  def total_bytes(self) -> int:
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
            + self.generated_code_bytes)


@dataclasses.dataclass(frozen=True)
class Report:
  """What `compile_for_topology` found.

  Attributes:
    topology: The slice compiled for.
    mesh_shape: Sizes of the mesh axes ('data', 'fsdp', 'tensor').
    num_devices: Devices the compiler sees (v4 shows each TensorCore as one: two per chip).
    hbm_bytes_per_device: The chip's HBM over its devices.
    param_count: Parameters of the model.
    flops_per_step: Model FLOPs of one step, all devices (bert_jax/model/flops.py).
    compile_seconds: Wall time of the TPU compile on this host.
    memory: Per-device memory; None when the compiler refused the program.
    compiler_error: The compiler's out-of-memory message, when it refused the program.
    model_config: The model compiled (config.model's, or a bert_config.json's).
    task: A fine-tuning config's task; None for pre-training.
    compiled: The compiled step (None when refused), e.g. for its `input_shardings`.
  """
  topology: tpu_topology.Topology
  mesh_shape: dict[str, int]
  num_devices: int
  hbm_bytes_per_device: int
  param_count: int
  flops_per_step: int
  compile_seconds: float
  memory: Memory | None
  compiler_error: str | None
  model_config: modeling.BertConfig | None = None
  task: finetune_task.FinetuneTask | None = None
  compiled: Any = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def fits(self) -> bool:
    return self.memory is not None and self.memory.total_bytes <= self.hbm_bytes_per_device


def topology_devices(topology: tpu_topology.Topology) -> list[jax.Device]:
  """The slice's devices, compile-only: no TPU needed, only libtpu's compiler.

  Raises:
    errors.UserError: libtpu is not installed, or the compiler does not know the slice.
  """
  if importlib.util.find_spec("libtpu") is None:
    raise errors.UserError("libtpu (the TPU compiler) is not installed: pip install -e '.[tpu]' "
                           "(Linux x86_64 only)")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # The compiler's default host is 2x2 chips; a single chip is a host of its own.
  options = {"chips_per_host_bounds": (1, 1, 1)} if topology.num_chips == 1 else {}
  try:
    return list(topologies.get_topology_desc(
        topology_name=topology.name, platform="tpu", **options).devices)
  except jax.errors.JaxRuntimeError as e:
    first_line = str(e).strip().splitlines()[0]
    raise errors.UserError(f"topology {topology.name!r}: the TPU compiler says: {first_line}"
                           ) from e


def compile_for_topology(config: ml_collections.ConfigDict, topology_name: str,
                         model_config: modeling.BertConfig | None = None) -> Report:
  """Compiles config's train step for the named TPU slice and measures what it needs.

  Args:
    config: A full run config (configs/*.py), overrides applied: pre-training, or fine-tuning
      (its task's head, with no checkpoint).
    topology_name: The compiler's name (v5e:4x4) or a Cloud TPU accelerator type (v5litepod-16).
    model_config: Fine-tuning: the architecture (a bert_config.json's, interop/config_json.py);
      None = config.model's (config.init_checkpoint is not read). Its dtype, scan, remat and
      attention are config.model's.

  Raises:
    errors.UserError: A bad config, topology or mesh, before anything is compiled.
  """
  finetune_task.check_mode(config, model_config)
  topology = tpu_topology.parse(topology_name)
  devices = topology_devices(topology)
  mesh = sharding.create_mesh(config.mesh, devices=devices)
  # JAX's own backend here is the CPU; the run compiles for the TPU.
  validation.validate(config, mesh, platform="tpu")
  rules = sharding.logical_axis_rules(config)

  # Built outside `jax.set_mesh`: under a mesh of compile-only devices no op can run, and
  # optax's tree_map_params (the optimizer state's shardings) runs its tx.init. Only tracing
  # needs the mesh, and that happens in `lower` below.
  with nn.logical_axis_rules(rules):
    if config.mode == "finetune":
      step = _finetune_step(config, mesh, rules, model_config)
    else:
      step = _pretrain_step(config, mesh, rules)
  key = jax.eval_shape(lambda: train_state.root_key(config))  # A typed key, e.g. dtype key<fry>.
  # One key, or a sweep's one per member.
  rng = jax.ShapeDtypeStruct(step.rng_shape, key.dtype, sharding=sharding.replicated(mesh))

  start = time.perf_counter()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled, compiler_error = _compile(step.program.train_step.lower(step.state, step.batch,
                                                                      rng, *step.extra))
  compile_seconds = time.perf_counter() - start
  memory = None if compiled is None else _memory(compiled.memory_analysis())
  chips = {tuple(getattr(d, "coords", (d.id,))) for d in devices}
  return Report(
      topology=topology, mesh_shape=dict(mesh.shape), num_devices=len(devices),
      hbm_bytes_per_device=topology.hbm_bytes_per_chip // (len(devices) // len(chips)),
      param_count=sum(x.size for x in jax.tree.leaves(step.state.params)),
      flops_per_step=step.flops_per_step, compile_seconds=compile_seconds, memory=memory,
      compiler_error=compiler_error, model_config=step.model_config, task=step.task,
      compiled=compiled)


@dataclasses.dataclass(frozen=True)
class _Step:
  """What is compiled: the program, its abstract arguments, and what the report says of it."""
  program: Any
  state: Any
  batch: dict[str, jax.ShapeDtypeStruct]
  model_config: modeling.BertConfig
  flops_per_step: int
  task: finetune_task.FinetuneTask | None = None
  rng_shape: tuple[int, ...] = ()  # A sweep's: one key per member.
  extra: tuple[Any, ...] = ()  # A sweep's step also takes the members' learning rates.


def _pretrain_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   rules: sharding.Rules) -> _Step:
  program = train_program.build_program(config, mesh, rules, config.data.next_sentence_prediction)
  return _Step(
      program=program,
      state=sharding.with_shardings(program.abstract_state, program.state_shardings),
      batch=train_program.abstract_batch(config, config.train.batch_size, program.batch_sharding),
      model_config=modeling.BertConfig.from_config(config.model),
      flops_per_step=flops.pretraining_flops_per_step(
          config.model, config.train.batch_size, config.data.max_seq_length,
          config.data.max_predictions_per_seq))


def _finetune_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   rules: sharding.Rules, architecture: modeling.BertConfig | None) -> _Step:
  """The fine-tuning step on unpacked rows of train.batch_size examples, from a dummy batch of
  the family's shapes: no data and no checkpoint."""
  task = finetune_task.finetune_task(config)
  model_config = finetune_task.finetune_model(config, architecture)
  # The learning-rate schedule needs a length. It is a constant in the step, not a shape: when
  # neither train.num_train_steps nor the task's size gives one, any length compiles the same.
  steps = (finetune_task.finetune_steps(config, task.train_examples)
           if config.train.num_train_steps > 0 or task.train_examples else 1)
  resolved = config.copy_and_resolve_references()
  resolved.train.num_train_steps = steps
  resolved.train.num_warmup_steps = int(steps * config.train.warmup_proportion)
  example = families.get(task.family).dummy_batch(1, config.data.max_seq_length,
                                                  task.num_labels)
  batch_size, seq_length = config.train.batch_size, config.data.max_seq_length
  if sweep_program.sweeping(config):
    return _sweep_step(resolved, mesh, model_config, task, example)
  program = finetune_program.build_program(resolved, mesh, rules, model_config, task.family,
                                           task.num_labels, example)
  return _Step(
      program=program,
      state=sharding.with_shardings(program.abstract_state, program.state_shardings),
      batch=finetune_program.abstract_batch(example, batch_size, program.batch_sharding),
      model_config=model_config,
      flops_per_step=finetune_task.finetuning_flops_per_step(model_config, task, batch_size,
                                                        seq_length),
      task=task)


def _sweep_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                model_config: modeling.BertConfig, task: finetune_task.FinetuneTask,
                example: dict[str, np.ndarray]) -> _Step:
  """A sweep's step (config.sweep): every member's state and batch, stacked, as
  finetuning/sweep.py runs them on this mesh."""
  members = sweep_program.grid(config)
  count = len(members)
  program = sweep_program.build_sweep_program(config, model_config, task.family,
                                              task.num_labels, members, mesh)
  key = jax.eval_shape(lambda: train_state.root_key(config))
  abstract = sweep_program.abstract_states(program.abstract_member_state(example, key), count)
  split = sweep_program.member_sharding(mesh, count)
  batch_size, seq_length = config.train.batch_size, config.data.max_seq_length
  return _Step(
      program=program,
      state=sharding.with_shardings(abstract, sweep_program.state_shardings(mesh, count,
                                                                            abstract)),
      batch={k: jax.ShapeDtypeStruct((count, batch_size) + v.shape[1:],
                                     jax.dtypes.canonicalize_dtype(v.dtype), sharding=split)
             for k, v in example.items()},
      model_config=model_config,
      flops_per_step=count * finetune_task.finetuning_flops_per_step(model_config, task,
                                                                     batch_size, seq_length),
      task=task, rng_shape=(count,),
      extra=(jax.ShapeDtypeStruct((count,), jnp.float32, sharding=sharding.replicated(mesh)),))


def _compile(lowered: Any) -> tuple[Any, str | None]:
  """(the compiled step, None), or (None, the compiler's out-of-memory message)."""
  try:
    return lowered.compile(), None
  except jax.errors.JaxRuntimeError as e:
    # The TPU compiler refuses a program whose temporaries exceed the usable HBM: that is the
    # answer (does not fit), not a failure of the tool.
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return None, str(e).strip().splitlines()[0]


def _memory(stats: Any) -> Memory:
  return Memory(
      argument_bytes=stats.argument_size_in_bytes, output_bytes=stats.output_size_in_bytes,
      alias_bytes=stats.alias_size_in_bytes, temp_bytes=stats.temp_size_in_bytes,
      generated_code_bytes=stats.generated_code_size_in_bytes,
      compiler_peak_bytes=getattr(stats, "peak_memory_in_bytes", 0))


def format_report(report: Report, config: ml_collections.ConfigDict) -> str:
  """The report as printed by the CLI; the last line says whether it fits."""
  topology, mesh = report.topology, report.mesh_shape
  model = report.model_config or config.model
  gib = lambda n: f"{n / _GIB:8.2f} GiB"  # pylint: disable=unnecessary-lambda-assignment
  lines = [
      f"slice      {topology.name} (Cloud TPU {topology.accelerator_type}): {topology.num_chips} "
      f"chips, {report.num_devices} devices; mesh "
      + " ".join(f"{axis}={size}" for axis, size in mesh.items()),
      f"model      {report.param_count / 1e6:.1f}M params, {model.num_hidden_layers} layers, "
      f"hidden {model.hidden_size}, dtype {model.dtype}, remat {model.remat_policy}, "
      f"scan_layers {model.scan_layers}, attention {model.attention}",
      f"step       {_step_shape(report, config)}; {report.flops_per_step:.3e} model FLOPs "
      f"(3x forward, bert_jax/model/flops.py)",
      f"compile    {report.compile_seconds:.1f} s on this host",
  ]
  hbm = report.hbm_bytes_per_device
  if report.memory is None:
    lines.append(f"DOES NOT FIT: the compiler refused the program; per-device HBM {hbm / _GIB:.2f} "
                 f"GiB ({report.compiler_error})")
    return "\n".join(lines)
  memory = report.memory
  lines += [
      "per device (compiled.memory_analysis()):",
      f"  arguments           {gib(memory.argument_bytes)}   train state + batch + rng",
      f"  outputs             {gib(memory.output_bytes)}   new state + metrics",
      f"  aliased (donated)  -{gib(memory.alias_bytes)}   outputs written into donated inputs",
      f"  temporaries         {gib(memory.temp_bytes)}",
      f"  generated code      {gib(memory.generated_code_bytes)}",
      f"  total at peak       {gib(memory.total_bytes)}   "
      "arguments + outputs - aliased + temporaries + code",
      f"  (compiler's peak    {gib(memory.compiler_peak_bytes)}   its own heap simulation)",
      f"  HBM                 {gib(hbm)}   {topology.chip}: "
      f"{topology.hbm_bytes_per_chip / _GIB:.0f} GiB per chip",
  ]
  share = f"{memory.total_bytes / _GIB:.2f} of {hbm / _GIB:.2f} GiB per device"
  lines.append(f"FITS: {share}, {100 * memory.total_bytes / hbm:.0f}%" if report.fits
               else f"DOES NOT FIT: {share}")
  return "\n".join(lines)


def _step_shape(report: Report, config: ml_collections.ConfigDict) -> str:
  """What one step takes: the pre-training batch, or the fine-tuning task's."""
  batch, length = config.train.batch_size, config.data.max_seq_length
  task = report.task
  if task is None:
    return (f"batch {batch} x seq {length} ({config.data.max_predictions_per_seq} predictions), "
            f"grad_accum_steps {config.train.grad_accum_steps}")
  choices = f" x {task.choices} choices" if task.choices > 1 else ""
  members = (f" x {len(sweep_program.grid(config))} sweep members"
             if sweep_program.sweeping(config) else "")
  # data.packing puts short examples into fewer rows: unpacked is the most a step takes.
  return (f"fine-tuning {task.name} (family {task.family}, {task.num_labels} "
          f"output{'' if task.num_labels == 1 else 's'}): batch {batch}{choices} x seq "
          f"{length}{members}, unpacked (the most a step takes)")


# ---- Command line ----


def set_environment(topology_name: str) -> None:
  """Defaults, for this process only, that keep libtpu quiet and off any real TPU.

  Without TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES libtpu logs host-bounds warnings and an
  INVALID_ARGUMENT line; their values change nothing it compiles (checked: the same memory
  figures with and without them). ALLOW_MULTIPLE_LIBTPU_LOAD skips libtpu's one-process-per-host
  lock (/tmp/libtpu_lockfile), which a training job or a test on the same host may hold: this
  process only compiles. JAX itself stays on the CPU: nothing here runs on a device.
  """
  try:
    accelerator_type = tpu_topology.parse(topology_name).accelerator_type
  except errors.UserError:
    accelerator_type = "v5litepod-16"  # Any valid one: the bad name is reported later.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator_type)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  if "JAX_PLATFORMS" not in os.environ:
    jax.config.update("jax_platforms", "cpu")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  topology_name, config = flags.FLAGS.topology, flags.FLAGS.config
  set_environment(topology_name)
  try:
    report = compile_for_topology(config, topology_name,
                                  finetune_task.read_architecture(flags.FLAGS.bert_config))
  except errors.UserError as e:
    sys.exit(f"bert_jax: error: {e}")
  print(format_report(report, config), flush=True)
  if not report.fits:
    sys.exit(2)


if __name__ == "__main__":
  # Defined only when run as a program, so that importing this module (tests, notebooks) never
  # clashes with main.py's --config.
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/large.py; override fields with --config.a.b=v.",
      lock_config=True)
  flags.DEFINE_string("topology", None,
                      f"TPU slice to compile for: {tpu_topology.ACCEPTED_FORMS}.")
  flags.DEFINE_string("bert_config", None,
                      "Fine-tuning configs: the model's shape from a bert_config.json or an HF "
                      "config.json (no checkpoint needed); default: config.model.")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main, flags_parser=cli.parse_flags)
