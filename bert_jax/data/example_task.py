"""Moved: `python -m bert_jax.finetuning.data.example_task`."""

from bert_jax import moved

moved.alias(__name__, "bert_jax.data.example_task", "bert_jax.finetuning.data.example_task")
