"""Entry point: `python -m bert_jax.main --config=configs/<name>.py --workdir=DIR [--config.x=v]`.

Only wires flags to library calls, so everything it runs can be imported from a test or a
notebook. Run the same command on every host of a multi-host job.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from bert_jax.config import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/tiny.py; override fields with --config.a.b=v.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (local or gs://) for data, checkpoints and TensorBoard logs.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process jobs where jax cannot find the processes itself (GPU clusters, local runs); on
# Cloud TPU, SLURM and Open MPI leave them out. See bert_jax/runtime/distributed.py.
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordination service, the same on "
    "every process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process, 0 to num_processes - 1.")
# jax's defaults; see docs/resuming.md for what each bounds.
_INITIALIZATION_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout_seconds", 300, "Multi-process jobs: how long a process waits for "
    "all the others to join before it stops with an error.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 100, "Multi-process jobs: how long a process may send no "
    "heartbeat before the others take it for lost and stop (one killed is seen at once).")


def _use_compilation_cache(workdir: str) -> None:
  """Compiled programs kept in WORKDIR/compile_cache: a second command on the same workdir (a
  resume, predict or encode after fine-tuning) loads them instead of compiling again. Local
  workdirs only: on gs:// every host would read and write the bucket at start-up. A cache the
  environment names (JAX_COMPILATION_CACHE_DIR, jax's own variable) is used instead: one
  shared by many workdirs."""
  import jax  # pylint: disable=g-import-not-at-top
  if "://" in workdir and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "compile_cache"))
  # jax's default keeps only compiles over 1 s; a CPU run's encode or predict takes less, and
  # is the command whose start-up a user waits for.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    # Orbax logs every save step by step at INFO: the run's own lines are on stdout, so only
    # warnings and errors go to stderr unless --verbosity=0 (or -v) asks for more.
    logging.set_verbosity(logging.WARNING)
  # Imported here so that --help and flag errors are instant (no TF/JAX import).
  from bert_jax import disk_full  # pylint: disable=g-import-not-at-top
  from bert_jax import errors  # pylint: disable=g-import-not-at-top
  from bert_jax import signals  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import distributed  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import preemption  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  try:
    if not isinstance(config, ml_collections.ConfigDict):
      raise errors.UserError(cli.config_file_error(
          config_flags.get_config_filename(flags.FLAGS["config"]), config))
    _start(config)
    # From here a signal at any moment ends the command saved or complete, and a full disk is
    # one line (docs/resuming.md).
    with preemption.guard(), disk_full.reported(_WORKDIR.value, kept=_kept):
      _run_mode(config, _WORKDIR.value)
  except errors.UserError as e:
    # A user's mistake gets one line that names the field or file, not a traceback.
    print(f"bert_jax: error: {e}", file=sys.stderr, flush=True)
    if isinstance(e, disk_full.DiskFull):
      # Orbax's writers of the failed save may still be unwinding in their threads: at
      # interpreter shutdown they print pages about closed event loops.
      sys.stdout.flush()
      os._exit(1)  # pylint: disable=protected-access
    distributed.finish(_HEARTBEAT_TIMEOUT.value)
    sys.exit(1)
  except signals.Stopped as e:
    print(e.line, flush=True)
    sys.exit(0)
  except jax.errors.JaxRuntimeError:
    # A collective that failed because a process was lost: the watch names it and ends this
    # process; anything else is a bug, with its traceback.
    distributed.await_lost_process()
    raise
  distributed.finish()


def _kept() -> str:
  """What a rerun goes on from, after a full disk: the workdir's last complete checkpoint."""
  from bert_jax.runtime import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.resume_point(checkpoint.checkpoint_dir(_WORKDIR.value))


def _start(config: ml_collections.ConfigDict) -> None:
  """Before the JAX backend starts: its platforms, devices and processes; then the compute
  dtype, and its line for a valid config."""
  from bert_jax.config import validation  # pylint: disable=g-import-not-at-top
  from bert_jax import errors  # pylint: disable=g-import-not-at-top
  from bert_jax import backends  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import checkpoint  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import distributed  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import precision  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import report  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  single_process = (_NUM_PROCESSES.value in (None, 1)
                    and distributed.detect_cluster() is None)
  cpu_devices = precision.set_cpu_devices(config, single_process)
  backends.skip_tpu_without_chips()
  distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         _INITIALIZATION_TIMEOUT.value, _HEARTBEAT_TIMEOUT.value,
                         checkpoint.checkpoint_dir(_WORKDIR.value))
  # model.dtype='auto' becomes a dtype here, once, for everything the mode builds. The line
  # that says so is printed only for a valid config: a mistake gets its one line alone, from
  # the mode, which checks in its own order (a task before a checkpoint, ...).
  why = precision.resolve_dtype(config)
  try:
    validation.validate(config)
  except errors.UserError:
    pass
  else:
    on_cpu = jax.devices()[0].platform == "cpu"
    report.line(f"Compute: {config.model.dtype} ({why})"
                + (f"; {cpu_devices}" if cpu_devices and on_cpu else ""))
  _use_compilation_cache(_WORKDIR.value)


def _run_mode(config: ml_collections.ConfigDict, workdir: str) -> None:
  from bert_jax import errors  # pylint: disable=g-import-not-at-top
  from bert_jax.config import validation  # pylint: disable=g-import-not-at-top
  if config.mode == "pretrain":
    from bert_jax.pretraining import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, workdir)
  elif config.mode == "eval":
    from bert_jax.pretraining import evaluation  # pylint: disable=g-import-not-at-top
    evaluation.evaluate_checkpoint(config, workdir)
  elif config.mode == "encode":
    from bert_jax.finetuning import encode  # pylint: disable=g-import-not-at-top
    encode.encode_file(config, workdir)
  elif config.mode == "predict":
    from bert_jax.finetuning import predict  # pylint: disable=g-import-not-at-top
    predict.predict_file(config, workdir)
  elif config.mode == "finetune":
    from bert_jax.finetuning import finetune  # pylint: disable=g-import-not-at-top
    from bert_jax.finetuning import sweep  # pylint: disable=g-import-not-at-top
    from bert_jax.finetuning import sweep_program  # pylint: disable=g-import-not-at-top
    if sweep_program.sweeping(config):  # Several runs trained together (config.sweep).
      sweep.sweep(config, workdir)
    else:
      finetune.finetune(config, workdir)
  else:
    raise errors.UserError(f"config.mode={config.mode!r} is not {validation.MODES}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
