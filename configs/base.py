"""BERT-Base pre-training, as in the paper: L12/H768/A12, batch 256, 1M steps, lr 1e-4.

    python -m bert_jax.main --config=configs/base.py --workdir=DIR [--config.a.b=value ...]

Every field, its default and its doc: bert_jax/config/base.py (docs/CONFIG.md).
"""

import ml_collections

from bert_jax.config import base


def get_config() -> ml_collections.ConfigDict:
  return base.get_config()
