"""The package's layout: the foundations import no mode, no module imports itself in a cycle, and
the mode modules' functions are short (docs/concepts.md, "Where things live").

Read with `ast` (every import, a function's own included), so the check is cheap and sees what
a lazy import would hide from a runtime check.
"""

import ast
import glob
import os

_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bert_jax")
# What each foundation may import besides itself (and the modules at the top: errors.py,
# files.py, signals.py, backends.py).
_ALLOWED = {"model": set(), "tokenizers": set(), "interop": {"model", "tokenizers"},
            "runtime": {"model", "interop"}, "config": {"model", "runtime"}}


def _modules() -> dict[str, set[str]]:
  """Dotted module name -> the bert_jax modules it imports."""
  imports = {}
  for root, _, names in os.walk(_PACKAGE):
    for name in names:
      if not name.endswith(".py"):
        continue
      path = os.path.join(root, name)
      relative = os.path.relpath(path, os.path.dirname(_PACKAGE))[:-3].replace(os.sep, ".")
      module = relative.removesuffix(".__init__")
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
      found = set()
      for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bert_jax"):
          for alias in node.names:
            candidate = f"{node.module}.{alias.name}"
            found.add(candidate if os.path.exists(_path_of(candidate)) else node.module)
        elif isinstance(node, ast.Import):
          found.update(a.name for a in node.names if a.name.startswith("bert_jax"))
      imports[module] = found
  return imports


def _path_of(module: str) -> str:
  return os.path.join(os.path.dirname(_PACKAGE), *module.split(".")) + ".py"


def _subpackage(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 2 else ""


def test_foundations_import_no_mode():
  for module, imported in _modules().items():
    allowed = _ALLOWED.get(_subpackage(module))
    if allowed is None:
      continue
    for target in imported:
      package = _subpackage(target)
      assert package in allowed | {_subpackage(module), ""}, f"{module} imports {target}"


def test_no_import_cycles():
  imports = _modules()
  done, path = set(), []

  def visit(module):
    if module in path:
      raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
    if module in done:
      return
    path.append(module)
    # A module naming itself (prepare.py, so its pool workers find it by its package name) is no
    # cycle.
    for target in sorted(imports.get(module, set()) - {module}):
      visit(target)
    path.pop()
    done.add(module)

  for module in sorted(imports):
    visit(module)


# The mode modules and the loop read top to bottom: no function over this many lines. Exempt:
# the ports of official code that mirror the original's functions (squad_metrics.py; data/).
_MAX_FUNCTION_LINES = 60
_MODE_MODULES = ("finetuning/*.py", "finetuning/families/*.py", "pretraining/*.py",
                 "runtime/loop.py", "tpu/*.py")
_PORTS = ("finetuning/squad_metrics.py",)


def test_mode_functions_are_short():
  long_ones = []
  for pattern in _MODE_MODULES:
    for path in sorted(glob.glob(os.path.join(_PACKAGE, pattern))):
      if os.path.relpath(path, _PACKAGE) in _PORTS:
        continue
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > _MAX_FUNCTION_LINES:
            long_ones.append(f"{os.path.relpath(path, _PACKAGE)}:{node.lineno} {node.name}: "
                             f"{lines} lines")
  assert not long_ones, "\n".join(long_ones)
