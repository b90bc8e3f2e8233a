"""BERT-Large pre-training, as in the paper: L24/H1024/A16, otherwise as configs/base.py.

One real step on a CPU, on the embedded corpus:
    python -m bert_jax.main --config=configs/large.py --workdir=/tmp/large \
        --config.data.source=embedded --config.train.num_train_steps=1 --config.train.batch_size=2

Fits a v5litepod-16 in bf16 with FSDP over all 16 chips (4.7 of 16 GiB per chip at seq 128;
seq 512 needs remat, docs/BENCHMARKS.md):
    python -m bert_jax.tpu.aot --config=configs/large.py --topology=v5litepod-16 \
        --config.model.dtype=bfloat16 --config.mesh.data=1 --config.mesh.fsdp=-1
"""

import ml_collections

from bert_jax.config import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model.hidden_size = 1024
  config.model.num_hidden_layers = 24
  config.model.num_attention_heads = 16
  config.model.intermediate_size = 4096
  return config
