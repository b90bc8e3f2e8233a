"""Moved: `python -m bert_jax.config.doc`."""

from bert_jax import moved

moved.alias(__name__, "bert_jax.config_doc", "bert_jax.config.doc")
