"""Runs the documented command lines of one module as far as a dry run goes (test_doc_commands).

    python tests/doc_commands_worker.py MODULE COMMANDS.json RESULTS.json

COMMANDS.json is a list of argument lists (each without `python -m MODULE`). For a bert_jax
command the module's own `__main__` defines its flags and parser exactly as on the command
line; each argument list is then parsed by it, and checked as the command would check it
before doing any work:
  bert_jax.main          the config validated (validation.validate, on a mesh of the devices
                         config.mesh names) and a fine-tuning task looked up in its registry
  bert_jax.tpu.estimate  run (arithmetic only) unless it asks for --aot, then as tpu.aot
  bert_jax.tpu.aot       the slice parsed and the config validated for it, without compiling
  the others             parsed
For bench modules (one process for all: argparse has no global flags) each argument list goes
through the module's own argparse parser, stopped right after parsing. RESULTS.json gets one
error string (or null) per command, in order.
"""

import argparse
import contextlib
import importlib
import io
import json
import math
import os
import runpy
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("USE_TF", "0")  # transformers beside TensorFlow (bench modules).


class _Parsed(Exception):
  """Raised where a command would start its work: everything before it passed."""


def _bert_jax_parser(module: str):
  """The module's flags parser, its flags defined as `python -m module` defines them."""
  from absl import app  # pylint: disable=g-import-not-at-top
  captured = {}

  def capture(main, argv=None, flags_parser=None):
    del argv
    captured.update(main=main, parser=flags_parser)
    raise _Parsed

  run = app.run
  app.run = capture
  sys.argv = [module]
  try:
    with contextlib.suppress(_Parsed):
      runpy.run_module(module, run_name="__main__", alter_sys=False)
  finally:
    app.run = run
  from absl import flags  # pylint: disable=g-import-not-at-top
  return captured["parser"] or flags.FLAGS, captured["main"]


def _mesh(config, num_devices: int | None = None):
  from jax.sharding import AbstractMesh  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import sharding  # pylint: disable=g-import-not-at-top
  if num_devices is None:  # The devices the mesh names (-1 = the rest: none here).
    num_devices = math.prod(max(1, config.mesh[axis]) for axis in sharding.MESH_AXES)
  return AbstractMesh(sharding.mesh_shape(config.mesh, num_devices), sharding.MESH_AXES)


def _check_main(flag_values) -> None:
  from bert_jax.config import validation  # pylint: disable=g-import-not-at-top
  config = flag_values.config
  validation.validate(config, _mesh(config))
  if config.mode == "finetune":
    from bert_jax.finetuning.families import registry  # pylint: disable=g-import-not-at-top
    registry.check_task(config)


def _check_tpu(flag_values) -> None:
  from bert_jax.config import validation  # pylint: disable=g-import-not-at-top
  from bert_jax.tpu import finetune_task  # pylint: disable=g-import-not-at-top
  from bert_jax.tpu import tpu_topology  # pylint: disable=g-import-not-at-top
  config = flag_values.config
  topology = tpu_topology.parse(flag_values.topology)
  finetune_task.check_mode(config, finetune_task.read_architecture(flag_values.bert_config))
  validation.validate(config, _mesh(config, topology.num_chips), platform="tpu")
  if config.mode == "finetune":
    finetune_task.finetune_task(config)


def _assume_named_inputs_exist(args: list[str]) -> None:
  """The checkpoints and files a documented command names are the reader's, not this
  machine's: the existence checks answer yes for exactly those paths (this child only)."""
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  named = {arg.split("=", 1)[1] for arg in args if arg.startswith("--") and "=" in arg}
  exists = gpath._GPath.exists  # pylint: disable=protected-access

  def named_or_exists(path) -> bool:
    text = str(path)
    return text in named or text.removesuffix(".index") in named or exists(path)

  gpath._GPath.exists = named_or_exists  # pylint: disable=protected-access


def _check_one(module: str, parser, main, args: list[str]) -> str | None:
  """The command's error line, or None: parsed, then checked as the module checks it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from bert_jax import errors  # pylint: disable=g-import-not-at-top
  stderr = io.StringIO()
  # config_flags finds the --config.a.b overrides in sys.argv, as on the command line.
  sys.argv = [module, *args]
  _assume_named_inputs_exist(args)
  try:
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
      argv = parser(sys.argv)
      if module == "bert_jax.main":
        _check_main(flags.FLAGS)
      elif module == "bert_jax.tpu.aot" or (module == "bert_jax.tpu.estimate"
                                            and flags.FLAGS.aot):
        _check_tpu(flags.FLAGS)
      elif module == "bert_jax.tpu.estimate":
        main(argv)  # Arithmetic only: the command as written.
    return None
  except errors.UserError as e:
    return str(e)
  except SystemExit as e:  # A message (sys.exit("...: error: ...")), or printed before it.
    if e.code in (0, None):
      return None
    lines = stderr.getvalue().strip().splitlines()
    return e.code if isinstance(e.code, str) else (lines[-1] if lines else f"exit {e.code}")


def _bert_jax(module: str, commands: list[list[str]]) -> list[str | None]:
  """Each command in a child process forked after the flags are defined: config_flags' override
  flags (--config.a.b) belong to the config file a parse loaded, so each parse starts fresh."""
  parser, main = _bert_jax_parser(module)
  # What the checks import, imported once here: every child (a fork) then has it loaded.
  from bert_jax.config import validation  # pylint: disable=g-import-not-at-top,unused-import
  from bert_jax.finetuning.families import registry  # pylint: disable=g-import-not-at-top,unused-import
  from bert_jax.tpu import finetune_task  # pylint: disable=g-import-not-at-top,unused-import
  results = []
  for args in commands:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
      os.close(read)
      try:
        error = _check_one(module, parser, main, args)
      except BaseException as e:  # pylint: disable=broad-except
        error = f"{type(e).__name__}: {e}"
      os.write(write, json.dumps(error).encode("utf-8"))
      os._exit(0)  # pylint: disable=protected-access
    os.close(write)
    with os.fdopen(read, "rb") as f:
      answer = f.read()
    _, status = os.waitpid(child, 0)
    results.append(json.loads(answer) if answer else f"the check died (status {status})")
  return results


def _bench(commands: list[list[str]]) -> list[str | None]:
  """commands: [module, *args] each, parsed by the module's argparse parser in its main()."""
  parse_args = argparse.ArgumentParser.parse_args

  def parse_then_stop(self, args=None, namespace=None):
    parse_args(self, args, namespace)
    raise _Parsed

  argparse.ArgumentParser.parse_args = parse_then_stop
  results = []
  for module, *args in commands:
    sys.argv = [module, *args]
    stderr = io.StringIO()
    try:
      bench = importlib.import_module(module)
      with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        bench.main(args) if module == "bench.device_check" else bench.main()
      results.append(f"{module}.main() ran to the end without parsing its arguments")
    except _Parsed:
      results.append(None)
    except SystemExit:
      lines = stderr.getvalue().strip().splitlines()
      results.append(lines[-1] if lines else "exit")
  return results


def main() -> None:
  module, commands_file, results_file = sys.argv[1:4]
  with open(commands_file, encoding="utf-8") as f:
    commands = json.load(f)
  results = _bench(commands) if module == "bench" else _bert_jax(module, commands)
  with open(results_file, "w", encoding="utf-8") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main()
