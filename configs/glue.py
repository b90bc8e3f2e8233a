"""GLUE fine-tuning from TFDS (glue/*), as the paper: one task per run.

    python -m bert_jax.main --config=configs/glue.py --config.task=sst2 \
        --config.init_checkpoint=PRETRAINED --workdir=DIR

The paper's grid, each on a fresh workdir, the best on dev kept:
    for bs in 16 32; do for lr in 5e-5 3e-5 2e-5; do for ep in 2 3 4; do
      python -m bert_jax.main --config=configs/glue.py --config.task=mrpc \
          --config.init_checkpoint=PRETRAINED --workdir=DIR/bs$bs-lr$lr-ep$ep \
          --config.train.batch_size=$bs --config.train.learning_rate=$lr \
          --config.train.num_train_epochs=$ep
    done; done; done
MNLI is evaluated on validation_matched and validation_mismatched; STS-B is regression
(Pearson, Spearman); CoLA reports Matthews correlation; MRPC and QQP F1 and accuracy.
"""

import ml_collections

from bert_jax.config import finetune


def get_config() -> ml_collections.ConfigDict:
  config = finetune.get_config()
  config.task = "sst2"
  config.data.max_seq_length = 128
  config.train.batch_size = 32
  config.train.learning_rate = 2e-5
  config.train.num_train_epochs = 3.0
  return config
