"""--config on the command line: every mistake in --config=FILE or --config.a.b=v is one line.

ml_collections reports an override of a field that does not exist, or a missing config file,
with a traceback from deep inside flag parsing. `parse_flags` is the flags parser of every
command that takes --config (bert_jax.main, bert_jax.tpu.aot, bert_jax.tpu.estimate).
"""

import os
import re
import sys

import ml_collections

from bert_jax import errors
from bert_jax.config import files


def _config_argument(argv: list[str]) -> str | None:
  """The value of --config in argv, before absl has parsed it."""
  for i, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config_file(path: str) -> ml_collections.ConfigDict | None:
  """get_config() of the file at `path` ('file.py' or 'file.py:argument'); None if no file."""
  filename, *arguments = path.split(":", 1)
  if not os.path.isfile(filename):
    return None
  return files.load_module(filename, "bert_jax_config_to_check").get_config(*arguments)


def _flag_error(argv: list[str]) -> str | None:
  """The one line for an --config or --config.a.b=v that ml_collections fails on; None if not."""
  path = _config_argument(argv)
  if path is None:
    return None
  config = _load_config_file(path)
  if config is None:
    return f"--config={path}: no such file"
  from bert_jax.config import validation  # pylint: disable=g-import-not-at-top
  for arg in argv:
    override = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
    if override:
      message = validation.unknown_override(config, override.group(1))
      if message:
        return message
  return None


def config_file_error(path: str, config: object) -> str:
  """Why the config file at `path` gave `config`, not a ConfigDict."""
  if not os.path.isfile(path.split(":", 1)[0]):
    return f"--config={path}: no such file"
  try:
    getattr(config, "mode")
  except (OSError, AttributeError) as e:
    return f"--config={path}: " + " ".join(str(e).split())
  return f"--config={path}: get_config() did not return a ConfigDict"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake in a flag reported as one line (exit status 1)."""
  try:
    return errors.flags_parser("bert_jax")(argv)
  except (AttributeError, KeyError, OSError):
    # ml_collections raises these from deep inside on --config.a.b=v of a field that does not
    # exist, or when the config file is missing.
    message = _flag_error(argv)
    if message is None:
      raise
    sys.exit(f"bert_jax: error: {message}")
