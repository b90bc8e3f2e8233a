"""Config files by path: a config file that starts from another one, from any directory.

ml_collections loads `--config=PATH` by its path, so `from configs import large` in a config
file works only where `configs` happens to be importable (the repository's root). `sibling`
finds the other file next to the one asking, wherever both are.
"""

import importlib.util
import os
from types import ModuleType


def load_module(path: str, name: str) -> ModuleType:
  """The Python file at `path`, executed as a module called `name`."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str) -> ModuleType:
  """The config file `name`.py in the directory of `config_file` (pass `__file__`)."""
  directory = os.path.dirname(os.path.abspath(config_file))
  return load_module(os.path.join(directory, f"{name}.py"), f"bert_jax_config_{name}")
