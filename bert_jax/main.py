"""Entry point: `python -m bert_jax.main --config=configs/<name>.py --workdir=DIR [--config.x=v]`.

Only wires flags to library calls, so everything it runs can be imported from a test or a
notebook. Run the same command on every host of a multi-host job.
"""

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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that --help and flag errors are instant (no TF/JAX import).
  from bert_jax import errors  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  try:
    if config.mode != "pretrain":
      raise errors.UserError(f"config.mode={config.mode!r} is not supported (only 'pretrain')")
    train.train_and_evaluate(config, _WORKDIR.value)
  except errors.UserError as e:
    # A user's mistake gets one line that names the field or file, not a traceback.
    sys.exit(f"bert_jax: error: {e}")


if __name__ == "__main__":
  app.run(main)
