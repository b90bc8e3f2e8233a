"""Benchmarks: each module is a command, `python -m bench.<name>` from the repository root."""

# torch's Linux wheel on PyPI (the CUDA build) brings triton, which torch imports as soon as
# transformers loads a model. Loaded after TensorFlow (whose LLVM symbols are global), triton's own
# LLVM crashes the process in its static initialisers; loaded first, it keeps its own and both
# work. So it is imported here, before any bench imports TensorFlow (the GPU benches use it).
try:
  import triton  # pylint: disable=unused-import
except ImportError:  # torch's CPU wheels and other platforms have none.
  pass
