"""`python -m bert_jax.interop ...`: the conversion command, cli.py run as the main module (so
absl's --help lists its flags)."""

import runpy

if __name__ == "__main__":
  runpy.run_module("bert_jax.interop.cli", run_name="__main__", alter_sys=True)
