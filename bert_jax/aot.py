"""Moved to bert_jax/tpu/aot.py; this path keeps `python -m bert_jax.aot` and old imports working."""

import importlib
import runpy
import sys

_MOVED_TO = "bert_jax.tpu.aot"

if __name__ == "__main__":
  runpy.run_module(_MOVED_TO, run_name="__main__", alter_sys=True)
else:
  sys.modules[__name__] = importlib.import_module(_MOVED_TO)
