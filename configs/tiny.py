"""A small BERT pre-trained on the embedded corpus: 2 CPU cores, a few minutes, no network.

    python -m bert_jax.main --config=configs/tiny.py --workdir=/tmp/tiny
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model.vocab_size = 4000
  config.model.hidden_size = 128
  config.model.num_hidden_layers = 2
  config.model.num_attention_heads = 2
  config.model.intermediate_size = 512
  config.model.max_position_embeddings = 128

  config.data.source = "embedded"
  config.data.num_eval_documents = 40
  config.data.max_seq_length = 128
  config.data.max_predictions_per_seq = 20
  config.data.dupe_factor = 2

  config.train.batch_size = 32
  config.train.num_train_steps = 800
  config.train.learning_rate = 2e-3
  config.train.num_warmup_steps = 80
  config.train.log_every_steps = 50
  config.train.eval_every_steps = 400
  config.train.eval_batch_size = 64
  config.train.max_eval_steps = 0
  config.train.checkpoint_every_steps = 400
  return config
