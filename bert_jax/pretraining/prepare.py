"""The prepare command: flags -> checks -> prepare.prepare_pretraining_data -> a summary.

    python -m bert_jax.pretraining.prepare --input_file='corpus/*.txt' --vocab_file=spm.model \\
        --output_dir=DIR --max_seq_length=128 --dupe_factor=5 --eval_fraction=0.05

Every mistake in a flag or an input is one line naming it (exit status 1) before anything is
written; a non-empty --output_dir is replaced only with --overwrite.
"""

import collections
from collections.abc import Sequence
import os
import sys

from absl import app
from absl import flags
import ml_collections
import tensorflow as tf

from bert_jax import disk_full
from bert_jax import errors
from bert_jax.config import validation
from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import holdout
from bert_jax.pretraining.data import prepare
from bert_jax.pretraining.data import prepare_summary


def _define_flags() -> None:
  # Defined only when run as a script: a library import must not add flags to the importer's
  # command line (or clash with its own --vocab_file).
  flags.DEFINE_string("input_file", None, "Comma-separated globs of text files: one sentence "
                      "per line, a blank line between documents.")
  flags.DEFINE_string("tfds_name", None, "TFDS text dataset instead of --input_file, e.g. "
                      "wikipedia/20230601.en.")
  flags.DEFINE_string("tfds_split", "train", "TFDS split, e.g. train or train[:1%].")
  flags.DEFINE_string("tfds_text_key", "text", "TFDS feature that holds a document's text.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir; unset = TFDS's default.")
  flags.DEFINE_string("vocab_file", None, "SentencePiece .model or WordPiece vocab.txt.")
  flags.DEFINE_boolean("do_lower_case", None, "Lower-case text before WordPiece; unset = the "
                       "tokenizer's default.")
  flags.DEFINE_string("output_dir", None, "Directory to write the TFRecords and metadata to.")
  flags.DEFINE_integer("max_seq_length", 128, "Tokens per instance, [CLS] and [SEP]s included.")
  flags.DEFINE_float("short_seq_prob", 0.1,
                     "Probability of creating sequences shorter than max_seq_length (NSP).")
  flags.DEFINE_integer("dupe_factor", 5,
                       "Passes over the training documents, each with new pairings.")
  flags.DEFINE_float("eval_fraction", 0.05, "Fraction of the documents held out to build "
                     "eval.tfrecord (the first of the input).")
  flags.DEFINE_integer("min_eval_documents", 10, "Fewest documents held out (never more than "
                       "half of them).")
  flags.DEFINE_integer("max_eval_documents", 200, "Most documents held out.")
  flags.DEFINE_integer("num_eval_documents", -1, "Exactly this many documents held out instead "
                       "of --eval_fraction; -1 = the fraction.")
  flags.DEFINE_list("extra_seq_lengths", [], "More lengths to make the training instances at, "
                    "from the same documents: seqL-train-KKKKK.tfrecord (e.g. 512, for a second "
                    "phase's data.phase2_input_files).")
  flags.DEFINE_integer("random_seed", 12345, "Seed of everything random (with shard indices).")
  flags.DEFINE_boolean("next_sentence_prediction", True, "Sentence pairs with NSP labels (the "
                       "original BERT); false: RoBERTa's FULL-SENTENCES packing.")
  flags.DEFINE_integer("documents_per_shard", prepare.DEFAULT_DOCUMENTS_PER_SHARD,
                       "Documents of an input shard, and so of a training file.")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Worker processes on this host.")
  flags.DEFINE_integer("num_hosts", 1, "Hosts sharing the work.")
  flags.DEFINE_boolean("overwrite", False, "Replace what --output_dir already holds (without it, "
                       "a non-empty --output_dir stops the command before anything is written).")
  flags.DEFINE_integer("host_index", 0, "This host, in [0, num_hosts); host 0 writes eval and "
                       "metadata.json once every other host is done.")
  flags.mark_flags_as_required(["vocab_file", "output_dir"])


def _check_flags(flag_values: flags.FlagValues) -> None:
  """The flags' own checks, before anything is read or written."""
  if flag_values.max_seq_length < 8:
    raise errors.UserError(f"--max_seq_length={flag_values.max_seq_length} is too short for a "
                           "sentence pair ([CLS] A [SEP] B [SEP]): at least 8")
  if not 0 <= flag_values.short_seq_prob <= 1:
    raise errors.UserError(f"--short_seq_prob={flag_values.short_seq_prob} must be between 0 "
                           "and 1")
  for name in ("dupe_factor", "documents_per_shard", "num_workers", "num_hosts"):
    if flag_values[name].value < 1:
      raise errors.UserError(f"--{name}={flag_values[name].value} must be at least 1")
  if not 0 <= flag_values.host_index < flag_values.num_hosts:
    raise errors.UserError(f"--host_index={flag_values.host_index} must be between 0 and "
                           f"--num_hosts - 1 = {flag_values.num_hosts - 1}")


def _check_output_dir(flag_values: flags.FlagValues) -> None:
  """What --output_dir holds is replaced only when --overwrite says so."""
  output_dir = flag_values.output_dir
  if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
    raise errors.UserError(f"--output_dir={output_dir} is a file, not a directory")
  # One host only: the hosts of a multi-host run write into one directory, in any order.
  if (flag_values.num_hosts == 1 and not flag_values.overwrite and tf.io.gfile.isdir(output_dir)
      and tf.io.gfile.listdir(output_dir)):
    raise errors.UserError(f"--output_dir={output_dir} is not empty: pass --overwrite to replace "
                           "what it holds, or name a new directory")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flag_values = flags.FLAGS
  if (flag_values.input_file is None) == (flag_values.tfds_name is None):
    raise app.UsageError("Give exactly one of --input_file and --tfds_name.")
  counters: collections.Counter = collections.Counter()
  # What corpus.load_documents reads, and the hold-out fields, as a run's config.data.
  data = ml_collections.ConfigDict({
      "source": "text" if flag_values.input_file is not None else "tfds",
      "input_files": flag_values.input_file or "", "max_documents": 0,
      **{name: flag_values[name].value for name in (
          "tfds_name", "tfds_split", "tfds_text_key", "tfds_data_dir", *holdout.FIELDS)}})
  try:
    lengths = flag_values.extra_seq_lengths
    if not all(length.isdigit() and int(length) >= 5 for length in lengths):
      raise errors.UserError(f"--extra_seq_lengths={','.join(lengths)} is not a list of "
                             "lengths of at least 5, e.g. 512")
    validation.check_holdout(data, prefix="--")
    _check_flags(flag_values)
    # Counted first (a pass over the text): the hold-out is a fraction of the documents.
    num_documents = corpus.count_documents(data)
    if not num_documents:
      raise errors.UserError(f"--input_file={flag_values.input_file}: no document (only blank "
                             "lines?)" if flag_values.input_file else
                             f"--tfds_name={flag_values.tfds_name}: no document")
    _check_output_dir(flag_values)
    num_eval_documents, holdout_line = holdout.resolve(data, num_documents)
    if data.num_eval_documents < 0:  # An explicit 0 asks for training records only.
      holdout.check_not_empty(num_eval_documents, num_documents, holdout_line, "--")
    print(holdout_line, flush=True)
    documents = corpus.load_documents(data, counters)
    loader = prepare.TokenizerLoader(flag_values.vocab_file, flag_values.do_lower_case)
    with disk_full.reported(flag_values.output_dir):
      metadata = prepare.prepare_pretraining_data(
          documents, loader, flag_values.output_dir, max_seq_length=flag_values.max_seq_length,
          short_seq_prob=flag_values.short_seq_prob, dupe_factor=flag_values.dupe_factor,
          num_eval_documents=num_eval_documents, seed=flag_values.random_seed,
          next_sentence_prediction=flag_values.next_sentence_prediction,
          extra_seq_lengths=[int(length) for length in lengths],
          documents_per_shard=flag_values.documents_per_shard,
          num_workers=flag_values.num_workers, num_hosts=flag_values.num_hosts,
          host_index=flag_values.host_index, input_counters=counters, progress_interval_s=5.0)
  except errors.UserError as e:
    # A bad flag or input file gets one line that names it, not a traceback.
    sys.exit(f"bert_jax.pretraining.prepare: error: {e}")
  if "summary" in metadata:
    print(prepare_summary.format_summary(metadata["summary"]))
  print(f"{len(metadata['train_files'])} training files in {flag_values.output_dir}")


if __name__ == "__main__":
  # Run through the module's real name, so that anything the worker processes unpickle is
  # named by the package, not by this __main__.
  from bert_jax.pretraining import prepare as _command  # pylint: disable=import-self
  _command._define_flags()  # pylint: disable=protected-access
  # --help lists the main module's key flags; these were defined in the imported module.
  flags.adopt_module_key_flags(_command)
  app.run(_command.main, flags_parser=errors.flags_parser("bert_jax.pretraining.prepare"))
