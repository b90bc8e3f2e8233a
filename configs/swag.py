"""Multiple choice, SWAG: which of four endings continues a sentence.

    python -m bert_jax.main --config=configs/swag.py --config.init_checkpoint=PRETRAINED \
        --config.data.train_file=train.csv --config.data.eval_file=val.csv --workdir=DIR

SWAG's own CSV files (columns sent1, sent2, ending0..ending3, label; TFDS has no SWAG
builder); --config.task=hellaswag reads HellaSwag from TFDS. Other files:
task=multiple_choice, naming the columns in data.text_a_key, data.text_b_key,
data.choice_keys and data.label_key. The BERT paper: batch 16, lr 2e-5, 3 epochs.
"""

import ml_collections

from bert_jax.config import finetune


def get_config() -> ml_collections.ConfigDict:
  config = finetune.get_config()
  config.task = "swag"
  config.data.max_seq_length = 128
  config.train.batch_size = 16
  config.train.learning_rate = 2e-5
  config.train.num_train_epochs = 3.0
  return config
