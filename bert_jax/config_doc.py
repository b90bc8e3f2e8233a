"""Moved to bert_jax/config/doc.py.

This path keeps `python -m bert_jax.config_doc` and old imports working.
"""

import importlib
import runpy
import sys

if __name__ == "__main__":
  runpy.run_module("bert_jax.config.doc", run_name="__main__", alter_sys=True)
else:
  sys.modules[__name__] = importlib.import_module("bert_jax.config.doc")
