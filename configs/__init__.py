"""Experiment configs: `--config=configs/<name>.py`; variants import base and change what differs."""
