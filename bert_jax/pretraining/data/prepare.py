"""Documents -> unmasked pre-training instances -> TFRecord shards; streaming, parallel, per host.

Builds instances the way google-research/bert's create_pretraining_data.py does (see
bert_jax/pretraining/data/instances.py), or RoBERTa's FULL-SENTENCES with
next_sentence_prediction=False, and writes them UNMASKED: masking happens later, in the input
pipeline, afresh for every epoch (bert_jax/pretraining/data/pipeline.py).

    python -m bert_jax.pretraining.prepare --input_file='corpus/*.txt' --vocab_file=spm.model \\
        --output_dir=DIR --max_seq_length=128 --dupe_factor=5 --eval_fraction=0.05

How the corpus is cut (this is what makes the output independent of workers and hosts):
  - The first documents of the stream are the eval documents: held out from training, turned
    into instances once (dupe_factor 1), written to eval.tfrecord by host 0. How many: a
    fraction of the corpus (counted in a first pass), floored and capped (holdout.py), or
    exactly --num_eval_documents. A corpus sorted by topic should be shuffled (or its files
    interleaved) beforehand.
  - The documents after them are grouped, in stream order, into input shards of
    documents_per_shard documents. Shard k is tokenized, turned into instances with a random
    source seeded from (seed, k), shuffled, and written as train-{k:05d}.tfrecord.
  - Random-next B segments are drawn from documents of the same shard (NVIDIA's sharded
    creation does the same): this is what bounds memory by a shard instead of the corpus.
  - Shards run in a pool of num_workers processes; with num_hosts > 1, host h takes the shards
    k with k % num_hosts == h (every host reads the stream to find them; reading is cheap next
    to instance creation), writes its part of metadata as host-HHHHH-of-NNNNN.json, and host 0,
    once every part is there, writes metadata.json.

Output directory:
  train-00000.tfrecord ...  training instances, each file one shuffled input shard
  seq512-train-00000.tfrecord ...  with --extra_seq_lengths=512: the same shards' at 512
  eval.tfrecord             instances of the held-out documents
  metadata.json             counts, settings, special ids, summary; written last, so a
                            directory without it is an interrupted prepare

Each record holds the original feature names, int64, padded to max_seq_length:
  input_ids [max_seq_length], input_mask [max_seq_length], segment_ids [max_seq_length],
  next_sentence_labels [1] (1 = B is a random sentence, 0 = B really follows A; always 0
  without next-sentence prediction).
"""

from collections.abc import Callable, Iterable, Sequence
import collections
import dataclasses
import inspect
import json
import os
import time
from typing import Any

import tensorflow as tf

from bert_jax import errors
from bert_jax import files as files_lib
from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import prepare_summary
from bert_jax.pretraining.data import shards
from bert_jax.tokenizers import tokenization

METADATA_FILENAME = "metadata.json"
EVAL_FILENAME = shards.EVAL_FILENAME
DEFAULT_DOCUMENTS_PER_SHARD = 2000
SPECIAL_ID_NAMES = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")


@dataclasses.dataclass(frozen=True)
class TokenizerLoader:
  """Loads a tokenizer from a vocabulary file: what workers get instead of a tokenizer object.

  Attributes:
    vocab_file: SentencePiece .model or WordPiece vocab.txt (local or gs://).
    do_lower_case: Passed to tokenization.load_tokenizer when it takes it; None = its default.
  """
  vocab_file: str
  do_lower_case: bool | None = None

  def __call__(self) -> Any:
    # do_lower_case only reaches tokenizers that take it (WordPiece; not SentencePiece).
    if (self.do_lower_case is not None and
        "do_lower_case" in inspect.signature(tokenization.load_tokenizer).parameters):
      return tokenization.load_tokenizer(self.vocab_file, do_lower_case=self.do_lower_case)
    return tokenization.load_tokenizer(self.vocab_file)


def _host_part_filename(host_index: int, num_hosts: int) -> str:
  return f"host-{host_index:05d}-of-{num_hosts:05d}.json"


def _write_json_atomically(path: str, value: dict[str, Any]) -> None:
  files_lib.write_whole(path, json.dumps(value, indent=2).encode())


def _wait_for_host_parts(output_dir: str, num_hosts: int, config: dict[str, Any],
                         progress: shards.Progress,
                         timeout_s: float | None) -> list[dict[str, Any]]:
  """The parts of metadata the other hosts wrote for this same config, once all are there.

  A part left by an earlier run with the same config describes the same files (the output is
  a function of the config and the input), so it is as good as a fresh one.
  """
  parts = {}
  deadline = None if timeout_s is None else time.time() + timeout_s
  while len(parts) < num_hosts - 1:
    for host_index in range(1, num_hosts):
      path = os.path.join(output_dir, _host_part_filename(host_index, num_hosts))
      if host_index not in parts and tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "r") as f:
          part = json.load(f)
        if part["config"] == config:
          parts[host_index] = part
    if len(parts) < num_hosts - 1:
      if deadline is not None and time.time() > deadline:
        missing = sorted(set(range(1, num_hosts)) - set(parts))
        raise errors.UserError(f"{output_dir}: hosts {missing} did not finish their shards "
                               f"within {timeout_s} s")
      progress.maybe_print(message=f", waiting for {num_hosts - 1 - len(parts)} other hosts")
      time.sleep(2.0)
  return [parts[h] for h in range(1, num_hosts)]


def prepare_pretraining_data(documents: Iterable[Sequence[str]],
                             load_tokenizer: Callable[[], Any],
                             output_dir: str,
                             *,
                             max_seq_length: int,
                             short_seq_prob: float,
                             dupe_factor: int,
                             num_eval_documents: int,
                             seed: int,
                             next_sentence_prediction: bool = True,
                             extra_seq_lengths: Sequence[int] = (),
                             documents_per_shard: int = DEFAULT_DOCUMENTS_PER_SHARD,
                             num_workers: int | None = None,
                             num_hosts: int = 1,
                             host_index: int = 0,
                             input_counters: dict[str, int] | None = None,
                             extra_metadata: dict[str, Any] | None = None,
                             progress_interval_s: float | None = 10.0,
                             host_wait_timeout_s: float | None = None) -> dict[str, Any]:
  """Writes this host's training shards (and, on host 0, eval and metadata.json).

  Deterministic: the same documents, vocabulary and arguments give the same files, whatever
  num_workers and num_hosts (see the module docstring for how the stream is cut).

  Args:
    documents: Documents, each a sequence of sentences (strings); read once, as a stream.
    load_tokenizer: Picklable, no arguments, returns the tokenizer (encode_batch, vocab_size,
      pad_id, unk_id, cls_id, sep_id, mask_id), e.g. TokenizerLoader(vocab_file). Every worker
      process calls it: tokenizers are loaded, never pickled.
    output_dir: Where to write (local or gs://); created if missing. A metadata.json already
      there is removed first (host 0), so an interrupted rewrite never looks complete.
    max_seq_length: Tokens per instance, [CLS] and [SEP]s included.
    short_seq_prob: NSP only: probability of a shorter target length for a pass over a
      document.
    dupe_factor: Passes over each training shard, each with new pairings (new packing without
      NSP).
    num_eval_documents: The first documents of the stream, held out for eval; 0 = no eval set
      (eval.tfrecord is empty).
    seed: With a shard's index, seeds everything random in that shard.
    next_sentence_prediction: True: the original's sentence pairs. False: RoBERTa's
      FULL-SENTENCES, packed single segments, next_sentence_labels all 0.
    extra_seq_lengths: More lengths to write training instances at, from the same documents
      (a second sequence-length phase): each shard's seqL-train-KKKKK.tfrecord holds what a
      prepare at length L alone would write (metadata 'extra_lengths'). Eval is at
      max_seq_length only.
    documents_per_shard: Documents of an input shard (and so of a training file); a worker's
      memory and the pool of random-next documents.
    num_workers: Worker processes; None = os.cpu_count(). A pool starts only when this host
      has two training shards or more.
    num_hosts: Hosts sharing the work, each running this with its own host_index.
    host_index: This host, in [0, num_hosts).
    input_counters: The reader's counters (corpus.text_file_documents), read once the stream
      is exhausted, for the summary.
    extra_metadata: More JSON-serialisable entries for metadata.json; they replace entries of
      the same name (e.g. 'config', to record the caller's whole data config).
    progress_interval_s: Seconds between progress lines on stderr; None = silent.
    host_wait_timeout_s: Host 0 only: how long to wait for the other hosts; None = forever.

  Returns:
    Host 0: the metadata (also in output_dir/metadata.json), with 'train_files' and
    'eval_files' as full paths. Other hosts: their part of it (training files and counts).

  Raises:
    errors.UserError: When no training document is left.
    ValueError: On a bad argument.
  """
  extra_seq_lengths = tuple(sorted(set(extra_seq_lengths) - {max_seq_length}))
  shortest = min((max_seq_length, *extra_seq_lengths))
  if shortest < 5:
    raise ValueError(f"max_seq_length must be at least 5 ([CLS] A [SEP] B [SEP]), "
                     f"not {shortest}")
  if dupe_factor < 1 or num_eval_documents < 0 or documents_per_shard < 1:
    raise ValueError(f"need dupe_factor >= 1, num_eval_documents >= 0, documents_per_shard >= 1;"
                     f" got {dupe_factor}, {num_eval_documents}, {documents_per_shard}")
  if not 0 <= host_index < num_hosts:
    raise ValueError(f"host_index {host_index} not in [0, num_hosts={num_hosts})")
  if num_workers is None:
    num_workers = os.cpu_count() or 1
  tokenizer = load_tokenizer()
  config = {
      "max_seq_length": max_seq_length,
      "short_seq_prob": short_seq_prob,
      "dupe_factor": dupe_factor,
      "num_eval_documents": num_eval_documents,
      "seed": seed,
      "next_sentence_prediction": next_sentence_prediction,
      "documents_per_shard": documents_per_shard,
      **({"extra_seq_lengths": list(extra_seq_lengths)} if extra_seq_lengths else {}),
      "vocab_file": getattr(load_tokenizer, "vocab_file",
                            getattr(tokenizer, "model_file", None)),
  }
  tf.io.gfile.makedirs(output_dir)
  metadata_path = os.path.join(output_dir, METADATA_FILENAME)
  part_path = os.path.join(output_dir, _host_part_filename(host_index, num_hosts))
  stale_path = metadata_path if host_index == 0 else part_path
  if tf.io.gfile.exists(stale_path):
    tf.io.gfile.remove(stale_path)

  settings = shards.Settings(output_dir, max_seq_length, short_seq_prob, dupe_factor, seed,
                             next_sentence_prediction, extra_seq_lengths)
  counters: collections.Counter = collections.Counter()
  progress = shards.Progress(progress_interval_s, counters,
                       f" (host {host_index} of {num_hosts})" if num_hosts > 1 else "")
  tasks = shards.iter_tasks(documents, num_eval_documents, documents_per_shard, num_hosts,
                            host_index, counters)
  results = shards.run_tasks(tasks, settings, load_tokenizer, tokenizer, num_workers,
                             progress)
  train_files = [r["file"] for r in results if r["file"] != EVAL_FILENAME]
  part = {"config": config, "train_files": train_files, "results": results,
          "documents_read": counters["documents_read"]}
  if host_index != 0:
    _write_json_atomically(part_path, part)
    progress.maybe_print(force=True, message=", done; host 0 writes metadata.json")
    return part

  if num_hosts > 1:
    for other in _wait_for_host_parts(output_dir, num_hosts, config, progress,
                                      host_wait_timeout_s):
      results.extend(other["results"])
  # Each document is in exactly one shard (eval included) of exactly one host.
  num_input_documents = sum(r["documents"] + r["skipped_documents"] for r in results)
  results.sort(key=lambda r: (r["file"] != EVAL_FILENAME, r["file"]))
  summary = prepare_summary.summarize(results, num_input_documents, dict(input_counters or {}))
  if summary["train_documents"] + summary["eval_documents"] < 1:
    files = corpus.input_summary(summary["input"])
    raise errors.UserError(f"no training document: the input has no document with text"
                           f"{f' ({files})' if files else ''}")
  if summary["train_documents"] < 1:
    raise errors.UserError(
        f"data.num_eval_documents={num_eval_documents} leaves no training document (there are "
        f"{summary['train_documents'] + summary['eval_documents']} non-empty documents)")
  metadata = {
      "num_train_instances": summary["train_instances"],
      "num_eval_instances": summary["eval_instances"],
      "num_train_documents": summary["train_documents"],
      "num_eval_documents": summary["eval_documents"],
      "num_random_next_train_instances": sum(r["random_next"] for r in results
                                             if r["file"] != EVAL_FILENAME),
      "max_seq_length": max_seq_length,
      "next_sentence_prediction": next_sentence_prediction,
      "vocab_size": tokenizer.vocab_size,
      "special_ids": {name: int(getattr(tokenizer, name)) for name in SPECIAL_ID_NAMES},
      "train_files": [r["file"] for r in results if r["file"] != EVAL_FILENAME],
      # Per file, in the order above: lets a resumed run skip whole epochs without reading.
      "train_file_instances": [r["instances"] for r in results if r["file"] != EVAL_FILENAME],
      "eval_files": [EVAL_FILENAME],
      **({"extra_lengths": _extra_lengths(results)} if extra_seq_lengths else {}),
      "summary": summary,
      "config": config,
  }
  metadata.update(extra_metadata or {})
  # Written last and renamed into place: its presence means every file above is complete.
  _write_json_atomically(metadata_path, metadata)
  progress.maybe_print(force=True, message=", done")
  return with_full_paths(metadata, output_dir)


def _extra_lengths(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """metadata['extra_lengths']: per extra length, its training files and counts."""
  return [{"max_seq_length": length,
           "train_files": [e["file"] for e in extras],
           "train_file_instances": [e["instances"] for e in extras],
           "num_train_instances": sum(e["instances"] for e in extras),
           "num_random_next_train_instances": sum(e["random_next"] for e in extras)}
          for length, extras in shards.extra_results_by_length(results)]


def with_full_paths(metadata: dict[str, Any], data_dir: str) -> dict[str, Any]:
  """A copy of metadata whose file lists (and a vocab_file kept beside them) are paths under
  data_dir, not bare names: a data directory moved elsewhere still reads."""
  metadata = dict(metadata)
  vocab_file = metadata.get("vocab_file")
  if vocab_file and "://" not in vocab_file and not os.path.isabs(vocab_file):
    metadata["vocab_file"] = os.path.join(data_dir, vocab_file)
  for key in ("train_files", "eval_files"):
    metadata[key] = [os.path.join(data_dir, name) for name in metadata[key]]
  metadata["extra_lengths"] = [
      {**extra, "train_files": [os.path.join(data_dir, name) for name in extra["train_files"]]}
      for extra in metadata.get("extra_lengths", [])]
  return metadata
