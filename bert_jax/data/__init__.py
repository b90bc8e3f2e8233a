"""Old paths of the data commands, kept as aliases (bert_jax/moved.py).

The data itself lives with its mode: bert_jax/pretraining/data and bert_jax/finetuning/data.
"""
