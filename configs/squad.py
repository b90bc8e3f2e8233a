"""SQuAD v1.1 (default) or v2.0 fine-tuning, as the original run_squad.py.

    python -m bert_jax.main --config=configs/squad.py --config.init_checkpoint=PRETRAINED \
        --workdir=DIR [--config.task=squad_v2.0 --config.data.version_2_with_negative=true]

The paper: batch 32, lr 3e-5 (v1.1; 5e-5 for v2.0), 2 epochs, seq 384, doc_stride 128. v2.0:
the eval prints best_f1_thresh, the no-answer threshold searched on dev; set it with
--config.data.null_score_diff_threshold for the final predictions.
"""

import ml_collections

from bert_jax.config import finetune


def get_config() -> ml_collections.ConfigDict:
  config = finetune.get_config()
  config.task = "squad_v1.1"
  config.data.max_seq_length = 384
  config.data.doc_stride = 128
  config.data.max_query_length = 64
  config.train.batch_size = 32
  config.train.learning_rate = 3e-5
  config.train.num_train_epochs = 2.0
  config.train.eval_batch_size = 64
  return config
