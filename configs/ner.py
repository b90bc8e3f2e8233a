"""NER fine-tuning on CoNLL-2003 (TFDS conll2003), the first sub-token of each word labelled.

    python -m bert_jax.main --config=configs/ner.py --config.init_checkpoint=PRETRAINED \
        --workdir=DIR

Your own tagged data: --config.task=ner --config.data.train_file=... --config.data.eval_file=...
(JSON lines of {"tokens": [...], "ner": [...]}, or CoNLL text). Metric: entity-level F1.
Cased models suit NER: --config.data.do_lower_case=false with a cased vocabulary.
"""

import ml_collections

from bert_jax.config import finetune


def get_config() -> ml_collections.ConfigDict:
  config = finetune.get_config()
  config.task = "conll2003"
  config.data.max_seq_length = 128
  config.train.batch_size = 32
  config.train.learning_rate = 5e-5
  config.train.num_train_epochs = 3.0
  return config
