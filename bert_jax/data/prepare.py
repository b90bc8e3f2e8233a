"""Documents -> unmasked NSP sentence-pair instances -> TFRecord shards.

Builds instances the way google-research/bert's create_pretraining_data.py does (its
create_instances_from_document and truncate_seq_pair), but writes them UNMASKED: masking happens
later, in the input pipeline, afresh for every epoch (bert_jax/data/pipeline.py).

    python -m bert_jax.data.prepare --input_file='corpus/*.txt' --vocab_file=spm.model \\
        --output_dir=DIR --max_seq_length=128 --dupe_factor=5 --num_eval_documents=200

Output directory:
  train-00000-of-000NN.tfrecord ...  training instances, shuffled, spread round-robin
  eval.tfrecord                      instances of the held-out documents (dupe_factor 1)
  metadata.json                      counts and settings; written last, so a directory without
                                     it is an interrupted prepare

Each record holds the original feature names, int64, padded to max_seq_length:
  input_ids [max_seq_length], input_mask [max_seq_length], segment_ids [max_seq_length],
  next_sentence_labels [1] (1 = B is a random sentence, 0 = B really follows A).
"""

from collections.abc import Iterable, Sequence
import dataclasses
import json
import os
import random
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from bert_jax import errors
from bert_jax import tokenization
from bert_jax.data import corpus

METADATA_FILENAME = "metadata.json"
EVAL_FILENAME = "eval.tfrecord"
# Sentences per encode_batch call: big enough to keep the C++ threads busy, small enough that
# one batch of pieces never dominates memory.
_ENCODE_CHUNK_SIZE = 20_000

# A document: its sentences, each a list of token ids.
Document = list[list[int]]


@dataclasses.dataclass(frozen=True)
class Instance:
  """One unmasked sentence pair: [CLS] A [SEP] B [SEP]."""
  tokens: list[int]  # ids, unpadded, [CLS] and [SEP]s included
  segment_ids: list[int]  # 0 over [CLS] A [SEP], 1 over B [SEP]
  is_random_next: bool  # B was drawn from another document


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: random.Random) -> None:
  """Shortens the pair in place to at most max_num_tokens tokens in all.

  Always trims the longer side, one token at a time from its front or its back at random, so
  the model does not learn that sentences end (or start) exactly at a segment boundary.
  """
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def create_instances_from_document(documents: Sequence[Document], document_index: int,
                                   max_seq_length: int, short_seq_prob: float,
                                   rng: random.Random) -> list[Instance]:
  """Cuts one document into sentence-pair instances (the original's algorithm).

  Sentences are gathered into a chunk until it holds target_seq_length tokens; the chunk is
  split at a random sentence boundary into A and B. Half the time (and always when the chunk
  is one sentence) B is replaced by sentences from a random other document, and the sentences
  of the chunk that went unused are put back to start the next chunk.

  Args:
    documents: All documents; B of a random-next pair is drawn from these.
    document_index: The document to cut.
    max_seq_length: Tokens per instance, [CLS] and [SEP]s included.
    short_seq_prob: Probability of a random shorter target length for this pass, so that the
      model also sees short sequences (fine-tuning inputs often are).
    rng: The random source; the whole prepare shares one.

  Returns:
    The instances.
  """
  document = documents[document_index]
  max_num_tokens = max_seq_length - 3  # Room for [CLS], [SEP], [SEP].
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)

  instances = []
  chunk: list[list[int]] = []
  chunk_length = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    chunk_length += len(document[i])
    if i == len(document) - 1 or chunk_length >= target_seq_length:
      # A takes the first a_end sentences of the chunk, at least one.
      a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
      tokens_a = [token for sentence in chunk[:a_end] for token in sentence]
      tokens_b = []
      is_random_next = len(chunk) == 1 or rng.random() < 0.5
      if is_random_next:
        target_b_length = target_seq_length - len(tokens_a)
        # Ten tries at another document; with a single document there is no other.
        for _ in range(10):
          random_document_index = rng.randint(0, len(documents) - 1)
          if random_document_index != document_index:
            break
        random_document = documents[random_document_index]
        random_start = rng.randint(0, len(random_document) - 1)
        for sentence in random_document[random_start:]:
          tokens_b.extend(sentence)
          if len(tokens_b) >= target_b_length:
            break
        # The sentences after A were not used: the next chunk starts with them.
        i -= len(chunk) - a_end
      else:
        for sentence in chunk[a_end:]:
          tokens_b.extend(sentence)
      truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
      tokens = ([tokenization.CLS_ID] + tokens_a + [tokenization.SEP_ID] + tokens_b +
                [tokenization.SEP_ID])
      segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
      instances.append(Instance(tokens, segment_ids, is_random_next))
      chunk = []
      chunk_length = 0
    i += 1
  return instances


def create_instances(documents: Sequence[Document], max_seq_length: int, short_seq_prob: float,
                     dupe_factor: int, rng: random.Random) -> list[Instance]:
  """Instances of every document, dupe_factor passes over them, shuffled."""
  instances = []
  for _ in range(dupe_factor):
    for document_index in range(len(documents)):
      instances.extend(create_instances_from_document(documents, document_index, max_seq_length,
                                                      short_seq_prob, rng))
  rng.shuffle(instances)
  return instances


def tokenize_documents(documents: Iterable[Sequence[str]],
                       tokenizer: tokenization.SentencePieceTokenizer) -> list[Document]:
  """Tokenizes documents in big batches; drops sentences and documents left without tokens."""
  documents = [document for document in documents if document]
  sentences = [sentence for document in documents for sentence in document]
  ids: list[list[int]] = []
  for start in range(0, len(sentences), _ENCODE_CHUNK_SIZE):
    ids.extend(tokenizer.encode_batch(sentences[start:start + _ENCODE_CHUNK_SIZE]))
  tokenized = []
  position = 0
  for document in documents:
    sentence_ids = [s for s in ids[position:position + len(document)] if s]
    position += len(document)
    if sentence_ids:
      tokenized.append(sentence_ids)
  return tokenized


def _serialize(instance: Instance, max_seq_length: int) -> bytes:
  num_padding = max_seq_length - len(instance.tokens)
  features = {
      "input_ids": instance.tokens + [tokenization.PAD_ID] * num_padding,
      "input_mask": [1] * len(instance.tokens) + [0] * num_padding,
      "segment_ids": instance.segment_ids + [0] * num_padding,
      "next_sentence_labels": [int(instance.is_random_next)],
  }
  example = tf.train.Example(features=tf.train.Features(feature={
      name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
      for name, values in features.items()
  }))
  return example.SerializeToString()


def _write_atomically(path: str, records: Iterable[bytes]) -> None:
  # A reader that sees `path` sees a whole file: it only appears, by rename, once complete.
  temporary_path = f"{path}.tmp-{os.getpid()}"
  with tf.io.TFRecordWriter(temporary_path) as writer:
    for record in records:
      writer.write(record)
  tf.io.gfile.rename(temporary_path, path, overwrite=True)


def prepare_pretraining_data(documents: Iterable[Sequence[str]],
                             tokenizer: tokenization.SentencePieceTokenizer,
                             output_dir: str,
                             *,
                             max_seq_length: int,
                             short_seq_prob: float,
                             dupe_factor: int,
                             num_eval_documents: int,
                             seed: int,
                             num_shards: int,
                             extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes training and eval instances of the documents as TFRecords, then metadata.json.

  Deterministic: the same documents, tokenizer and arguments give the same files. Documents are
  shuffled (seeded) and the last num_eval_documents of them are held out for eval.

  Args:
    documents: Documents, each a sequence of sentences (strings).
    tokenizer: Turns sentences into ids.
    output_dir: Where to write (local or gs://); created if missing. A metadata.json already
      there is removed first, so an interrupted rewrite never looks complete.
    max_seq_length: Tokens per instance, [CLS] and [SEP]s included.
    short_seq_prob: Probability of a shorter target length for a pass over a document.
    dupe_factor: Passes over the training documents, each with new pairings.
    num_eval_documents: Documents held out for eval; 0 = no eval set (eval.tfrecord is empty).
    seed: Seed of the document shuffle and of instance creation.
    num_shards: Number of training files.
    extra_metadata: More JSON-serialisable entries for metadata.json; they replace entries of
      the same name (e.g. 'config', to record the caller's whole data config).

  Returns:
    The metadata (also in output_dir/metadata.json), with 'train_files' and 'eval_files' as
    full paths.

  Raises:
    errors.UserError: When no training document is left.
    ValueError: On a bad argument.
  """
  if max_seq_length < 5:
    raise ValueError(f"max_seq_length must be at least 5 ([CLS] A [SEP] B [SEP]), "
                     f"not {max_seq_length}")
  if num_shards < 1 or dupe_factor < 1 or num_eval_documents < 0:
    raise ValueError(f"need num_shards >= 1, dupe_factor >= 1, num_eval_documents >= 0; got "
                     f"{num_shards}, {dupe_factor}, {num_eval_documents}")
  start_time = time.time()
  tf.io.gfile.makedirs(output_dir)
  metadata_path = os.path.join(output_dir, METADATA_FILENAME)
  if tf.io.gfile.exists(metadata_path):
    tf.io.gfile.remove(metadata_path)

  tokenized = tokenize_documents(documents, tokenizer)
  rng = random.Random(seed)
  rng.shuffle(tokenized)
  num_train_documents = len(tokenized) - num_eval_documents
  if num_train_documents < 1:
    raise errors.UserError(
        f"data.num_eval_documents={num_eval_documents} leaves no training document (there are "
        f"{len(tokenized)} non-empty documents)")
  train_documents = tokenized[:num_train_documents]
  eval_documents = tokenized[num_train_documents:]
  logging.info("Tokenized %d documents in %.1f s.", len(tokenized), time.time() - start_time)

  train_instances = create_instances(train_documents, max_seq_length, short_seq_prob,
                                     dupe_factor, rng)
  eval_instances = create_instances(eval_documents, max_seq_length, short_seq_prob,
                                    dupe_factor=1, rng=rng) if eval_documents else []

  train_filenames = [f"train-{shard:05d}-of-{num_shards:05d}.tfrecord"
                     for shard in range(num_shards)]
  for shard, filename in enumerate(train_filenames):
    # Round-robin, as the original spreads instances over its output files.
    _write_atomically(os.path.join(output_dir, filename),
                      (_serialize(instance, max_seq_length)
                       for instance in train_instances[shard::num_shards]))
  _write_atomically(os.path.join(output_dir, EVAL_FILENAME),
                    (_serialize(instance, max_seq_length) for instance in eval_instances))

  metadata = {
      "num_train_instances": len(train_instances),
      "num_eval_instances": len(eval_instances),
      "num_train_documents": len(train_documents),
      "num_eval_documents": len(eval_documents),
      "num_random_next_train_instances": sum(i.is_random_next for i in train_instances),
      "max_seq_length": max_seq_length,
      "vocab_size": tokenizer.vocab_size,
      "train_files": train_filenames,
      "eval_files": [EVAL_FILENAME],
      "config": {
          "max_seq_length": max_seq_length,
          "short_seq_prob": short_seq_prob,
          "dupe_factor": dupe_factor,
          "num_eval_documents": num_eval_documents,
          "seed": seed,
          "num_shards": num_shards,
          "vocab_file": getattr(tokenizer, "model_file", None),
      },
  }
  metadata.update(extra_metadata or {})
  # Written last and renamed into place: its presence means every file above is complete.
  temporary_path = f"{metadata_path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temporary_path, "w") as f:
    json.dump(metadata, f, indent=2)
  tf.io.gfile.rename(temporary_path, metadata_path, overwrite=True)
  logging.info("Wrote %d train and %d eval instances to %s in %.1f s.", len(train_instances),
               len(eval_instances), output_dir, time.time() - start_time)
  return with_full_paths(metadata, output_dir)


def with_full_paths(metadata: dict[str, Any], data_dir: str) -> dict[str, Any]:
  """A copy of metadata whose file lists are paths under data_dir, not bare names."""
  metadata = dict(metadata)
  for key in ("train_files", "eval_files"):
    metadata[key] = [os.path.join(data_dir, name) for name in metadata[key]]
  return metadata


def _define_flags() -> None:
  # Defined only when run as a script: a library import must not add flags to the importer's
  # command line (or clash with its own --vocab_file).
  flags.DEFINE_string("input_file", None, "Comma-separated globs of text files: one sentence "
                      "per line, a blank line between documents.")
  flags.DEFINE_string("vocab_file", None, "SentencePiece .model (see "
                      "tokenization.train_sentencepiece).")
  flags.DEFINE_string("output_dir", None, "Directory to write the TFRecords and metadata to.")
  flags.DEFINE_integer("max_seq_length", 128, "Tokens per instance, [CLS] and [SEP]s included.")
  flags.DEFINE_float("short_seq_prob", 0.1,
                     "Probability of creating sequences shorter than max_seq_length.")
  flags.DEFINE_integer("dupe_factor", 5,
                       "Passes over the training documents, each with new pairings.")
  flags.DEFINE_integer("num_eval_documents", 200,
                       "Documents held out to build eval.tfrecord from.")
  flags.DEFINE_integer("random_seed", 12345, "Seed of the document shuffle and the pairing.")
  flags.DEFINE_integer("num_shards", 1, "Number of training TFRecord files.")
  flags.mark_flags_as_required(["input_file", "vocab_file", "output_dir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flag_values = flags.FLAGS
  try:
    metadata = prepare_pretraining_data(
        corpus.text_file_documents(flag_values.input_file),
        tokenization.load_tokenizer(flag_values.vocab_file),
        flag_values.output_dir,
        max_seq_length=flag_values.max_seq_length,
        short_seq_prob=flag_values.short_seq_prob,
        dupe_factor=flag_values.dupe_factor,
        num_eval_documents=flag_values.num_eval_documents,
        seed=flag_values.random_seed,
        num_shards=flag_values.num_shards)
  except errors.UserError as e:
    # A bad flag or input file gets one line that names it, not a traceback.
    sys.exit(f"bert_jax.data.prepare: error: {e}")
  print(f"{metadata['num_train_instances']} train instances "
        f"({metadata['num_train_documents']} documents), {metadata['num_eval_instances']} eval "
        f"instances ({metadata['num_eval_documents']} documents) in {flag_values.output_dir}")

if __name__ == "__main__":
  _define_flags()
  app.run(main)
