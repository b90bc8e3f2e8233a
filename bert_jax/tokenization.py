"""Moved: `python -m bert_jax.tokenizers.tokenization`."""

from bert_jax import moved

moved.alias(__name__, "bert_jax.tokenization", "bert_jax.tokenizers.tokenization")
