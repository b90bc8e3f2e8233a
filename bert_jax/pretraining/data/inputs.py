"""A run's inputs: which records, which vocabulary, how to mask, and this host's datasets.

Two ways in: data prepared once into WORKDIR/data from text (sources 'embedded', 'text',
'tfds'; see workdir_data.py), or TFRecords prepared beforehand (source 'tfrecord'), by
`python -m bert_jax.pretraining.prepare` or by the original's create_pretraining_data.py.
"""

import dataclasses
import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow as tf

from bert_jax import errors
from bert_jax import files as files_lib
from bert_jax.pretraining.data import damaged_records
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import pipeline
from bert_jax.pretraining.data import workdir_data
from bert_jax.tokenizers import tokenization


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What the datasets are built from.

  Attributes:
    train_files, eval_files: TFRecord files.
    vocab_size: The tokenizer's vocabulary size.
    masking_config: Special ids and the masking recipe.
    next_sentence_prediction: Whether the records are sentence pairs with NSP labels.
    file_counts: Records in each training file, when known (cheap resume).
    length_train_files: Training files made at other lengths from the same documents (a
      second phase's, workdir_data.extra_seq_lengths), by length.
  """
  train_files: list[str]
  eval_files: list[str]
  vocab_size: int
  masking_config: masking.MaskingConfig
  next_sentence_prediction: bool
  file_counts: dict[str, int] | None
  length_train_files: dict[int, list[str]] = dataclasses.field(default_factory=dict)


def _masking_config(config: ml_collections.ConfigDict, tokenizer) -> masking.MaskingConfig:
  data = config.data
  return masking.MaskingConfig(
      vocab_size=tokenizer.vocab_size, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
      mask_id=tokenizer.mask_id, special_ids=tuple(tokenizer.special_ids),
      max_predictions_per_seq=data.max_predictions_per_seq,
      masked_lm_prob=data.masked_lm_prob, whole_word_masking=data.whole_word_masking,
      word_starts=tokenizer.word_starts() if data.whole_word_masking else None)


def check_vocab(model_vocab_size: int, tokenizer_vocab_size: int) -> None:
  """Ids at or past model.vocab_size would silently gather garbage (the original made NaNs)."""
  if tokenizer_vocab_size > model_vocab_size:
    raise errors.UserError(
        f"model.vocab_size={model_vocab_size} is smaller than the tokenizer's "
        f"vocabulary ({tokenizer_vocab_size}): set "
        f"--config.model.vocab_size={tokenizer_vocab_size}")


def resolve(config: ml_collections.ConfigDict, workdir: str) -> Inputs:
  """Prepares (once) or finds the records, and loads the vocabulary they were made with; the
  model must have an embedding row for each of its pieces."""
  inputs = _records(config, workdir)
  check_vocab(config.model.vocab_size, inputs.vocab_size)
  return inputs


def _records(config: ml_collections.ConfigDict, workdir: str) -> Inputs:
  data = config.data
  if data.source == "tfrecord":
    if not data.vocab_file:
      raise errors.UserError("data.vocab_file is empty but data.source='tfrecord' needs the "
                             "vocabulary the records were made with")
    if not data.eval_input_files:
      raise errors.UserError("data.eval_input_files is empty but data.source='tfrecord' needs "
                             "held-out eval records")
    tokenizer = tokenization.load_tokenizer(data.vocab_file, do_lower_case=data.do_lower_case)
    length_train_files = {}
    if data.phase2_input_files:
      length_train_files[data.phase2_max_seq_length] = files_lib.match_files(
          data.phase2_input_files, "data.phase2_input_files")
    return Inputs(
        train_files=files_lib.match_files(data.input_files, "data.input_files"),
        eval_files=files_lib.match_files(data.eval_input_files, "data.eval_input_files"),
        vocab_size=tokenizer.vocab_size, masking_config=_masking_config(config, tokenizer),
        next_sentence_prediction=data.next_sentence_prediction, file_counts=None,
        length_train_files=length_train_files)

  metadata = workdir_data.prepare(config, workdir)
  tokenizer = tokenization.load_tokenizer(metadata["vocab_file"],
                                          do_lower_case=data.do_lower_case)
  counts = metadata.get("train_file_instances")
  file_counts = None
  if counts is not None:
    file_counts = dict(zip(metadata["train_files"], counts))
  for extra in metadata["extra_lengths"]:
    file_counts = {**(file_counts or {}),
                   **dict(zip(extra["train_files"], extra["train_file_instances"]))}
  return Inputs(
      train_files=metadata["train_files"], eval_files=metadata["eval_files"],
      vocab_size=tokenizer.vocab_size, masking_config=_masking_config(config, tokenizer),
      next_sentence_prediction=metadata.get("next_sentence_prediction", True),
      file_counts=file_counts,
      length_train_files={e["max_seq_length"]: e["train_files"]
                          for e in metadata["extra_lengths"]})


def damaged_files(config: ml_collections.ConfigDict, files: list[str], is_training: bool
                  ) -> dict[str, damaged_records.FileDamage]:
  """This host's files (of `files`) with damaged records, found by reading them all, when
  data.skip_damaged_records; {} otherwise (the first damaged record then stops the run)."""
  if not config.data.skip_damaged_records:
    return {}
  mine = files
  if is_training:
    mine, _ = pipeline.files_of_host(files, jax.process_index(), jax.process_count())
  return damaged_records.scan_files(mine)


def train_dataset(config: ml_collections.ConfigDict, inputs: Inputs, start_index: int,
                  damaged: dict[str, damaged_records.FileDamage] | None = None
                  ) -> tf.data.Dataset:
  """This host's endless training batches, starting after `start_index` of its examples;
  the records of `damaged` (damaged_files) are gone from the stream, as if never written."""
  records_per_epoch = None
  damaged = damaged or {}
  if inputs.file_counts is not None and start_index:
    counts = {**inputs.file_counts, **{path: found.good_records
                                       for path, found in damaged.items()}}
    records_per_epoch = pipeline.host_records_per_epoch(
        inputs.train_files, counts, jax.process_index(), jax.process_count())
  return pipeline.pretraining_dataset(
      inputs.train_files, batch_size=config.train.batch_size // jax.process_count(),
      max_seq_length=config.data.max_seq_length, masking_config=inputs.masking_config,
      seed=config.seed, is_training=True, start_index=start_index,
      process_index=jax.process_index(), process_count=jax.process_count(),
      shuffle_buffer_size=config.data.shuffle_buffer_size,
      static_masks=config.data.static_masks, records_per_epoch=records_per_epoch,
      damaged=damaged)


def _padded(batch: dict[str, np.ndarray], size: int, cls_id: int,
            sep_id: int) -> dict[str, np.ndarray]:
  """The batch with `example_weights` (1 real, 0 padding), filled up to `size` rows.

  A padding row is '[CLS] [SEP]' with no prediction: a valid input on every attention path (a
  row of padding only would mask every key), weighing nothing in any metric.
  """
  num_real = len(batch["input_ids"])
  padded = {}
  for name, values in batch.items():
    padded[name] = np.concatenate(
        [values, np.zeros((size - num_real, *values.shape[1:]), values.dtype)])
  padded["input_ids"][num_real:, :2] = [cls_id, sep_id]
  padded["input_mask"][num_real:, :2] = 1
  padded["example_weights"] = (np.arange(size) < num_real).astype(np.float32)
  return padded


def eval_batches(config: ml_collections.ConfigDict, inputs: Inputs,
                 damaged: dict[str, damaged_records.FileDamage] | None = None
                 ) -> list[dict[str, Any]]:
  """This host's fixed eval batches (same examples, same masks at every evaluation).

  Every eval record is read: the last batch is padded, its padding weighing nothing
  (`example_weights`, `masked_lm_weights` 0), so the metrics are those of the whole eval set.
  """
  host_batch_size = config.train.eval_batch_size // jax.process_count()
  dataset = pipeline.pretraining_dataset(
      inputs.eval_files, batch_size=host_batch_size,
      max_seq_length=config.data.max_seq_length, masking_config=inputs.masking_config,
      seed=config.seed + 1, is_training=False, process_index=jax.process_index(),
      process_count=jax.process_count(), damaged=damaged)
  if config.train.max_eval_steps > 0:
    dataset = dataset.take(config.train.max_eval_steps)
  cls_id, sep_id = inputs.masking_config.cls_id, inputs.masking_config.sep_id
  batches = [_padded(batch, host_batch_size, cls_id, sep_id) for batch in
             pipeline.numpy_iterator(dataset, inputs.eval_files, "data.eval_input_files")]
  num_batches = len(batches)
  if jax.process_count() > 1:
    # Each eval step is one global batch, so every host feeds as many as the host with most
    # (hosts' shares differ by at most a record); the others add batches of padding only.
    num_batches = int(np.max(multihost_utils.process_allgather(np.int32(num_batches))))
  if num_batches == 0:
    raise errors.UserError(
        f"the eval records ({', '.join(os.path.basename(f) for f in inputs.eval_files)}) "
        f"hold no instance: hold out more documents (data.eval_fraction, "
        f"data.min_eval_documents)")
  if len(batches) < num_batches:
    length, predictions = config.data.max_seq_length, config.data.max_predictions_per_seq
    empty = {name: np.zeros((0, *shape), np.float32 if name == "masked_lm_weights" else np.int32)
             for name, shape in (("input_ids", [length]), ("input_mask", [length]),
                                 ("segment_ids", [length]), ("masked_lm_positions", [predictions]),
                                 ("masked_lm_ids", [predictions]),
                                 ("masked_lm_weights", [predictions]),
                                 ("next_sentence_labels", []))}
    batches += [_padded(empty, host_batch_size, cls_id, sep_id)] * (num_batches - len(batches))
  return batches


def most_frequent_token_accuracy(batches: list[dict[str, np.ndarray]]) -> float:
  """MLM accuracy of always predicting the most frequent masked token of these batches.

  The best any constant predictor can do on this eval set: what a model must beat to have
  learned anything from context.
  """
  ids = np.concatenate([b["masked_lm_ids"].ravel() for b in batches])
  weights = np.concatenate([b["masked_lm_weights"].ravel() for b in batches])
  real = ids[weights > 0]
  if jax.process_count() == 1:
    counts = np.bincount(real)
  else:
    # Each host holds its share of the eval batches; the baseline is over all of them.
    length = int(np.max(multihost_utils.process_allgather(np.int32(real.max(initial=0) + 1))))
    counts = multihost_utils.process_allgather(np.bincount(real, minlength=length)).sum(axis=0)
  if counts.sum() == 0:
    return 0.0
  return float(counts.max() / counts.sum())
