"""Old paths of the data commands (`python -m bert_jax.data.prepare`, `...example_task`).

The data itself lives with its mode: bert_jax/pretraining/data and bert_jax/finetuning/data.
"""
