"""Fine-tuning on your own labelled files (or a GLUE/SQuAD/NER task).

    python -m bert_jax.main --config=configs/finetune.py --workdir=DIR \
        --config.init_checkpoint=PRETRAINED --config.task=classification \
        --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
        --config.data.text_a_key=review --config.data.label_key=stars

Every field, its default and its doc: bert_jax/config/finetune.py (docs/CONFIG.md).
"""

import ml_collections

from bert_jax.config import finetune


def get_config() -> ml_collections.ConfigDict:
  return finetune.get_config()
