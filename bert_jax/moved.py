"""The old paths of the documented commands, each now one line here that runs the new one.

`python -m bert_jax.aot` (and the others) still work for scripts written before the commands
moved: they print where the command lives now, on stderr, then run it there. An import of an
old path gets the new module, with a DeprecationWarning.
"""

import importlib
import runpy
import sys
import warnings


def alias(name: str, old: str, new: str, imported: str | None = None) -> None:
  """Runs `new` as `python -m old` would have run `old`; an import of `old` gets `imported`
  (default `new`).

  Args:
    name: The old module's `__name__` ('__main__' when run with -m).
    old: The old dotted path.
    new: The command's module now.
    imported: What an import of the old path gets, where that is not the command's module.
  """
  if name == "__main__":
    print(f"bert_jax: `python -m {old}` is now `python -m {new}`", file=sys.stderr, flush=True)
    runpy.run_module(new, run_name="__main__", alter_sys=True)
    return
  warnings.warn(f"{old} moved to {imported or new}", DeprecationWarning, stacklevel=3)
  sys.modules[old] = importlib.import_module(imported or new)
