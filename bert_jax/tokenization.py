"""Moved to bert_jax/tokenizers/tokenization.py.

This path keeps `python -m bert_jax.tokenization` and old imports working.
"""

import importlib
import runpy
import sys

if __name__ == "__main__":
  runpy.run_module("bert_jax.tokenizers.tokenization", run_name="__main__", alter_sys=True)
else:
  sys.modules[__name__] = importlib.import_module("bert_jax.tokenizers.tokenization")
