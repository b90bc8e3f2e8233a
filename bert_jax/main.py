"""Entry point: `python -m bert_jax.main --config=configs/<name>.py --workdir=DIR [--config.x=v]`.

Only wires flags to library calls, so everything it runs can be imported from a test or a
notebook. Run the same command on every host of a multi-host job.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/tiny.py; override fields with --config.a.b=v.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (local or gs://) for data, checkpoints and TensorBoard logs.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process jobs where jax cannot find the processes itself (GPU clusters, local runs); on
# Cloud TPU, SLURM and Open MPI leave them out. See bert_jax/distributed.py.
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordination service, the same on "
    "every process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process, 0 to num_processes - 1.")


def _quiet_unless_first_process() -> None:
  """Progress lines (data preparation, resume, final eval) come from process 0 only.

  Every host would print the same lines; one copy is enough. stderr stays open, so an error
  on any host is still seen.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that --help and flag errors are instant (no TF/JAX import).
  from bert_jax import distributed  # pylint: disable=g-import-not-at-top
  from bert_jax import errors  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  try:
    # Before anything touches the JAX backend.
    distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    _quiet_unless_first_process()
    if config.mode == "pretrain":
      train.train_and_evaluate(config, _WORKDIR.value)
    elif config.mode == "finetune":
      from bert_jax import finetune  # pylint: disable=g-import-not-at-top
      finetune.finetune(config, _WORKDIR.value)
    else:
      raise errors.UserError(f"config.mode={config.mode!r} is not 'pretrain' or 'finetune'")
  except errors.UserError as e:
    # A user's mistake gets one line that names the field or file, not a traceback.
    sys.exit(f"bert_jax: error: {e}")


if __name__ == "__main__":
  app.run(main)
