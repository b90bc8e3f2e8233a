"""The pre-training data of a run, built once into WORKDIR/data and reused on every resume.

WORKDIR/data holds the vocabulary (trained from the corpus unless data.vocab_file names one)
and the TFRecords of unmasked instances. Its metadata.json is written last, so a directory
without it is incomplete and is rebuilt; one built from a different data config is an error,
never silently mixed into a run.
"""

import collections
import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections
import tensorflow as tf

from bert_jax import errors
from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import holdout
from bert_jax.pretraining.data import pipeline
from bert_jax.pretraining.data import prepare as prepare_lib
from bert_jax.pretraining.data import prepare_summary
from bert_jax.runtime import report
from bert_jax.tokenizers import tokenization

# The data config fields that decide what the instances are.
_INSTANCE_FIELDS = ("source", "tfds_name", "tfds_split", "tfds_text_key", "input_files",
                    "vocab_file", "do_lower_case", "max_documents", *holdout.FIELDS,
                    "short_seq_prob", "dupe_factor", "next_sentence_prediction",
                    "documents_per_shard")


def prepare_seq_length(data_config: ml_collections.ConfigDict) -> int:
  """The length instances are prepared at: data.prepare_seq_length, else data.max_seq_length."""
  return data_config.prepare_seq_length or data_config.max_seq_length


def extra_seq_lengths(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Lengths prepared besides data.max_seq_length: a second phase's (train.phase2_start_step).

  Phase 1 then reads instances made at its own length, as the original prepares each phase's
  data; not the longer ones cut short, which pair differently (segment A longer than B in most
  pairs, far fewer instances). An explicit data.prepare_seq_length asks for that one data set,
  cut when read, instead.
  """
  length = config.data.phase2_max_seq_length
  if (not config.train.phase2_start_step or config.data.prepare_seq_length
      or length == config.data.max_seq_length):
    return ()
  return (length,)


def _fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  fields = {name: config.data[name] for name in _INSTANCE_FIELDS}
  fields["seed"] = config.seed
  extra = extra_seq_lengths(config)
  if extra:  # Absent otherwise, as in data prepared before it existed.
    fields["extra_seq_lengths"] = list(extra)
  return fields


def _check_same_data(saved: dict[str, Any], config: ml_collections.ConfigDict,
                     data_dir: str) -> None:
  # Instances prepared longer than data.max_seq_length serve it (they are truncated when read):
  # that is how a 128 phase and a 512 phase share one data set.
  prepared_length = saved["max_seq_length"]
  wanted = config.data.prepare_seq_length
  if (wanted and wanted != prepared_length) or config.data.max_seq_length > prepared_length:
    raise errors.UserError(
        f"data.max_seq_length={config.data.max_seq_length} (data.prepare_seq_length={wanted}) "
        f"but {data_dir} was prepared at {prepared_length}: use a new --workdir, or prepare "
        f"at the longest length you train with (data.prepare_seq_length)")
  saved = saved.get("config", {})
  for name, value in _fields(config).items():
    if name in holdout.FIELDS and "eval_fraction" not in saved:
      continue  # Prepared before the hold-out was a fraction: its eval set is what it is.
    if name == "extra_seq_lengths" and "extra_seq_lengths" not in saved and all(
        length <= prepared_length for length in value):
      continue  # Prepared before phases had their own lengths: phase 2 cuts the long ones.
    if name == "extra_seq_lengths" and saved.get(name) != value:
      raise errors.UserError(
          f"train.phase2_start_step needs instances of data.phase2_max_seq_length="
          f"{config.data.phase2_max_seq_length} but {data_dir} holds none: use a new --workdir")
    if saved.get(name) != value:
      prefix = "" if name == "seed" else "data."
      raise errors.UserError(
          f"{prefix}{name}={value!r} but {data_dir} was prepared with {saved.get(name)!r}: "
          f"use a new --workdir, or the same data config")


def _build(config: ml_collections.ConfigDict, data_dir: str) -> None:
  data = config.data
  vocab_file = data.vocab_file
  counters = collections.Counter()  # What the text files held that is not text.
  if vocab_file:
    # Streamed: prepare holds a few input shards at a time, never the corpus (counted first,
    # for the eval hold-out's fraction).
    num_documents = corpus.count_documents(data)
    documents = corpus.load_documents(data, counters)
  else:
    # The vocabulary is trained on the corpus first: it is read twice, so kept in memory.
    documents = list(corpus.load_documents(data, counters))
    if not documents:
      files = corpus.input_summary(counters)
      raise errors.UserError(f"data.source={data.source!r} gave no document with text"
                             f"{f' ({files})' if files else ''}")
    num_documents = len(documents)
  num_eval_documents, holdout_line = holdout.resolve(data, num_documents)
  # Before the vocabulary is trained: a corpus too small for the hold-out wastes nothing.
  holdout.check_not_empty(num_eval_documents, num_documents, holdout_line, "data.")
  if not vocab_file:
    vocab_file = tokenization.train_sentencepiece(
        (sentence for document in documents for sentence in document),
        vocab_size=config.model.vocab_size, model_prefix=os.path.join(data_dir, "vocab"),
        input_sentence_size=data.vocab_input_sentence_size, seed=config.seed)
  report.line(f"Data: {holdout_line}")
  metadata = prepare_lib.prepare_pretraining_data(
      documents, prepare_lib.TokenizerLoader(vocab_file, data.do_lower_case), data_dir,
      max_seq_length=prepare_seq_length(data), short_seq_prob=data.short_seq_prob,
      dupe_factor=data.dupe_factor, num_eval_documents=num_eval_documents,
      seed=config.seed,
      next_sentence_prediction=data.next_sentence_prediction,
      extra_seq_lengths=extra_seq_lengths(config),
      documents_per_shard=data.documents_per_shard,
      input_counters=counters,
      # A vocabulary trained here is named relative to the data, so the workdir can be moved;
      # the user's own is named as a full path.
      extra_metadata={"config": _fields(config), "vocab_file": (
          os.path.basename(vocab_file) if not data.vocab_file
          else vocab_file if "://" in vocab_file else os.path.abspath(vocab_file))})
  report.line(prepare_summary.format_summary(metadata["summary"]))


def prepare(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Builds WORKDIR/data if it is missing or incomplete; returns its metadata.

  Returns:
    metadata.json's contents: 'train_files', 'eval_files', 'vocab_file', 'vocab_size',
    instance and document counts, and the data config it was built from.
  """
  data_dir = os.path.join(workdir, "data")
  metadata_file = os.path.join(data_dir, "metadata.json")
  if jax.process_index() == 0 and not tf.io.gfile.exists(metadata_file):
    tf.io.gfile.makedirs(data_dir)
    # A run killed while preparing left files without metadata.json: they are all rebuilt
    # (same config, same files); only its half-written temporaries would be left over.
    for leftover in tf.io.gfile.glob(os.path.join(data_dir, "*.tmp-*")):
      tf.io.gfile.remove(leftover)
    report.line(f"Preparing pre-training data in {data_dir} (once per workdir)...")
    _build(config, data_dir)
  # Other hosts wait for process 0, which builds the data once for all of them.
  multihost_utils.sync_global_devices("bert_jax: workdir data ready")
  metadata = pipeline.read_metadata(data_dir)
  _check_same_data(metadata, config, data_dir)
  return metadata
