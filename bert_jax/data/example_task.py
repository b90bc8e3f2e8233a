"""Moved to bert_jax/finetuning/data/example_task.py.

This path keeps `python -m bert_jax.data.example_task` and old imports working.
"""

import importlib
import runpy
import sys

if __name__ == "__main__":
  runpy.run_module("bert_jax.finetuning.data.example_task", run_name="__main__", alter_sys=True)
else:
  sys.modules[__name__] = importlib.import_module("bert_jax.finetuning.data.example_task")
