"""Experiment configs: `--config=configs/<name>.py`; each starts from the schema in
bert_jax/config (or from another file here) and changes what differs."""
