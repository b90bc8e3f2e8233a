"""Moved to bert_jax/pretraining/data/prepare.py; its command to prepare_command.py there.

This path keeps `python -m bert_jax.data.prepare` and old imports working.
"""

import importlib
import runpy
import sys

if __name__ == "__main__":
  runpy.run_module("bert_jax.pretraining.data.prepare_command", run_name="__main__",
                   alter_sys=True)
else:
  sys.modules[__name__] = importlib.import_module("bert_jax.pretraining.data.prepare")
