"""Moved: `python -m bert_jax.pretraining.prepare`."""

from bert_jax import moved

moved.alias(__name__, "bert_jax.data.prepare", "bert_jax.pretraining.prepare",
            "bert_jax.pretraining.data.prepare")
