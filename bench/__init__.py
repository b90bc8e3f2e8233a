"""Benchmarks: each module is a command, `python -m bench.<name>` from the repository root."""

import sys

# torch's Linux wheel on PyPI (the CUDA build) brings triton, which torch imports as soon as
# transformers loads a model. Loaded after TensorFlow (whose LLVM symbols are global), triton's own
# LLVM crashes the process in its static initialisers. The benches compile no triton kernels.
sys.modules.setdefault("triton", None)
