"""Moved: `python -m bert_jax.tpu.aot`."""

from bert_jax import moved

moved.alias(__name__, "bert_jax.aot", "bert_jax.tpu.aot")
