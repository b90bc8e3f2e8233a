"""Moved: `python -m bert_jax.tpu.estimate`."""

from bert_jax import moved

moved.alias(__name__, "bert_jax.estimate", "bert_jax.tpu.estimate")
