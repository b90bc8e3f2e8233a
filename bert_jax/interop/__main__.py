"""`python -m bert_jax.interop ...`: the conversion command of convert.py, as before the move."""

import runpy

if __name__ == "__main__":
  runpy.run_module("bert_jax.interop.convert", run_name="__main__", alter_sys=True)
