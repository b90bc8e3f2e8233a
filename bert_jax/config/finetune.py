"""Fine-tuning on your own labelled files; the schema configs/finetune.py, glue.py, squad.py
and ner.py build on.

    python -m bert_jax.main --config=configs/finetune.py --workdir=DIR \
        --config.init_checkpoint=PRETRAINED --config.task=classification \
        --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
        --config.data.text_a_key=review --config.data.label_key=stars

task: 'classification', 'regression' or 'ner' on local files (CSV/TSV with a header, or JSON
lines), a GLUE task on TFDS ('sst2', 'mnli', ...; configs/glue.py), 'conll2003' NER,
'squad_v1.1' / 'squad_v2.0' (configs/squad.py), or multiple choice: 'swag' /
'multiple_choice' on local files, 'hellaswag' on TFDS (configs/swag.py).
"""

import ml_collections

from bert_jax.config import base

# Fields of base.py that fine-tuning does not read. A fine-tuning config that changes one would
# be silently ignored, so config_validation says which (`train.num_warmup_steps`: fine-tuning
# warms up for train.warmup_proportion of its steps).
PRETRAINING_ONLY = tuple(f"data.{name}" for name in (
    "source", "tfds_name", "tfds_split", "tfds_text_key", "input_files", "eval_input_files",
    "phase2_input_files", "max_documents", "eval_fraction", "min_eval_documents",
    "max_eval_documents", "num_eval_documents", "prepare_seq_length", "max_predictions_per_seq",
    "phase2_max_seq_length", "phase2_max_predictions_per_seq", "masked_lm_prob",
    "whole_word_masking", "static_masks", "next_sentence_prediction", "short_seq_prob",
    "dupe_factor", "documents_per_shard", "shuffle_buffer_size", "vocab_input_sentence_size",
    "skip_damaged_records")) + (
    tuple(f"train.{name}" for name in (
        "grad_accum_steps", "phase2_start_step", "phase2_batch_size", "num_warmup_steps",
        "max_eval_steps", "target_mlm_accuracy")))


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  # What main runs.
  config.mode = "finetune"
  # The task: a GLUE name (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), conll2003,
  # squad_v1.1, squad_v2.0, hellaswag, or classification / regression / ner / swag /
  # multiple_choice on data.train_file/eval_file.
  config.task = "classification"
  # The pre-trained model: a bert_jax workdir, an Orbax params dir, an HF BERT dir or a Google
  # TF checkpoint. Its architecture is used (config.model only sets dtype, scan_layers and
  # remat_policy); its encoder params are loaded, the task head starts fresh. Empty = random
  # init (for smoke tests only).
  config.init_checkpoint = ""

  # WordPiece vocab.txt or SentencePiece .model; '' = the one beside config.init_checkpoint
  # (vocab.txt, or a bert_jax workdir's data/).
  config.data.vocab_file = ""
  # Lower-case before WordPiece (uncased models).
  config.data.do_lower_case = True
  # Tokens per input, [CLS] and [SEP]s included.
  config.data.max_seq_length = 128
  # TFDS data_dir for TFDS tasks ('' = TFDS's default).
  config.data.tfds_data_dir = ""
  # Local files (comma-separated globs) instead of TFDS: .csv/.tsv with a header row, .jsonl,
  # SQuAD .json; for NER, JSON lines of {"tokens": [...], "ner": [...]} or CoNLL text.
  config.data.train_file = ""
  # Local eval file(s), the same format.
  config.data.eval_file = ""
  # Column of the (first) text in local files ('' = the task's default, e.g. 'sentence').
  config.data.text_a_key = ""
  # Column of the second text of a pair ('' = the task's own: e.g. GLUE pair tasks' second
  # column; none for a single-text task).
  config.data.text_b_key = ""
  # Column of the label ('' = the task's: 'label', or 'ner' for NER).
  config.data.label_key = ""
  # Labels of a local classification/NER file in id order, comma-separated ('' = the sorted
  # distinct labels of the training file).
  config.data.label_names = ""
  # Multiple choice: the columns of the endings, comma-separated ('' = SWAG's ending0..ending3).
  # The context is data.text_a_key ('' = 'sent1'), the start of every ending data.text_b_key
  # ('' = 'sent2'; '-' = none), the right ending's index data.label_key ('' = 'label').
  config.data.choice_keys = ""
  # Read at most this many examples per split (0 = all): quick runs.
  config.data.max_examples = 0
  # SQuAD: window stride over long contexts, in tokens.
  config.data.doc_stride = 128
  # SQuAD: longest question, in tokens (longer ones are truncated).
  config.data.max_query_length = 64
  # SQuAD v2.0: questions may have no answer.
  config.data.version_2_with_negative = False
  # SQuAD: candidate answers kept per question.
  config.data.n_best_size = 20
  # SQuAD: longest answer, in tokens.
  config.data.max_answer_length = 30
  # SQuAD v2.0: predict no answer when null score - best span score exceeds this; the eval
  # reports the best threshold on the dev set (best_f1_thresh) to set here.
  config.data.null_score_diff_threshold = 0.0

  # Global batch size (the paper's grid: 16 or 32).
  config.train.batch_size = 32
  # Peak learning rate (the paper's grid: 5e-5, 3e-5, 2e-5).
  config.train.learning_rate = 2e-5
  # Passes over the training data (the paper's grid: 2, 3, 4).
  config.train.num_train_epochs = 3.0
  # Optimizer steps; 0 = from train.num_train_epochs.
  config.train.num_train_steps = 0
  # Fraction of the steps spent warming up linearly from 0; train.schedule says how the rate
  # then decays to 0.
  config.train.warmup_proportion = 0.1
  # AdamW decoupled weight decay (not on LayerNorm params or biases).
  config.train.weight_decay = 0.01
  # Adam beta1.
  config.train.adam_b1 = 0.9
  # Adam beta2.
  config.train.adam_b2 = 0.999
  # Adam epsilon (the original's 1e-6).
  config.train.adam_epsilon = 1e-6
  # Clip gradients to this global norm (0 = no clipping).
  config.train.max_grad_norm = 1.0
  # Top encoder layers (and the pooler) re-initialised instead of loaded from
  # config.init_checkpoint (Zhang et al. 2021); 0 = all loaded, as the original.
  config.train.reinit_top_layers = 0
  # Steps between log lines.
  config.train.log_every_steps = 50
  # Steps between evaluations (0 = only at the end); the best one's params go to WORKDIR/best.
  config.train.eval_every_steps = 0
  # Global batch size of evaluation (the last batch is padded).
  config.train.eval_batch_size = 64
  # Steps between checkpoints, to resume (a final one is always written).
  config.train.checkpoint_every_steps = 1000
  # Checkpoints kept in WORKDIR/checkpoints.
  config.train.max_checkpoints_to_keep = 1
  # On a NaN/inf loss or gradient (the update is never applied): 'stop' with an error naming
  # the step, 'skip' the update and go on, or 'rollback' to the latest checkpoint and go on
  # with the batches after the bad one. Checked at every log line, eval and checkpoint.
  config.train.nan_policy = "stop"
  # Peak TFLOP/s of one device, the denominator of the MFU metric (as configs/base.py's): 0 =
  # the datasheet figure of the device kind or, on CPUs, the fastest of 20 matmuls timed here.
  config.train.peak_tflops_per_device = 0.0
  # Testing the guard only: comma-separated steps whose batch is made to give a NaN loss.
  config.train.debug_nan_steps = ""

  # The paper's protocol: several runs from the same checkpoint, trained together as one
  # compiled program (finetuning/sweep.py), the best on dev kept as the workdir's best.
  config.sweep = ml_collections.ConfigDict()
  # Peak learning rates, one run each (the paper's grid: 5e-5,4e-5,3e-5,2e-5); () = only
  # train.learning_rate.
  config.sweep.learning_rates = ()
  # Restarts per learning rate: seeds config.seed, config.seed + 1, ... (each its own classifier
  # init, dropout and data order). 1 with no learning_rates = one run, no sweep.
  config.sweep.seeds = 1
  return config
