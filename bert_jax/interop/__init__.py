"""Checkpoints in and out: Hugging Face, Google's TF checkpoints, Orbax (convert.py, also the
command `python -m bert_jax.interop`), and the name map between them (hf_params.py)."""
