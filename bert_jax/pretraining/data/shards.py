"""The work on one input shard, and the pool of processes that does it for a host.

bert_jax/pretraining/data/prepare.py cuts the document stream into tasks (eval, then input
shards) and calls run_tasks; each task becomes one TFRecord file and a dict of counts.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
import collections
import dataclasses
import itertools
import multiprocessing
import multiprocessing.pool
import os
import random
import sys
import time
from typing import Any, NamedTuple

import tensorflow as tf

from bert_jax import files as files_lib
from bert_jax.pretraining.data import instances as instances_lib
from bert_jax.pretraining.data import records

EVAL_FILENAME = "eval.tfrecord"
# Instance lengths are counted in buckets of this many tokens for the summary's histogram.
HISTOGRAM_BUCKET_WIDTH = 16
# Sentences per encode_batch call: big enough to keep the C++ threads busy, small enough that
# one batch of pieces never dominates memory.
_ENCODE_CHUNK_SIZE = 20_000


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every shard's work needs besides its documents; small, sent with each task."""
  output_dir: str
  max_seq_length: int
  short_seq_prob: float
  dupe_factor: int
  seed: int
  next_sentence_prediction: bool
  # More lengths to make training instances at, from the same documents (a second
  # sequence-length phase); each its own file per shard, as a prepare at that length makes.
  extra_seq_lengths: tuple[int, ...] = ()


class Task(NamedTuple):
  kind: str  # 'train' or 'eval'
  index: int  # The input shard's index in the stream (0 for eval).
  documents: list[Sequence[str]]
  filename: str


def shard_rng(seed: int, kind: str, index: int) -> random.Random:
  # A str seed is hashed with SHA-512 by random.seed: the same stream on every machine and
  # Python process (no hash randomisation), and unrelated streams for neighbouring shards.
  return random.Random(f"bert_jax.prepare/{seed}/{kind}/{index}")


def tokenize_documents(documents: Sequence[Sequence[str]],
                       tokenizer: Any) -> list[instances_lib.Document]:
  """Tokenizes documents in big batches; drops sentences and documents left without tokens."""
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


def write_records(path: str, serialized: Iterable[bytes]) -> None:
  # A reader that sees `path` sees a whole file: it only appears, by rename, once complete.
  with files_lib.whole(path) as partial, tf.io.TFRecordWriter(partial) as writer:
    for record in serialized:
      writer.write(record)


def length_filename(filename: str, max_seq_length: int) -> str:
  """The file of a shard's instances at an extra length: seq512-train-00000.tfrecord (a glob
  of the main files, train-*.tfrecord, does not match it)."""
  return f"seq{max_seq_length}-{filename}"


def process_shard(task: Task, settings: Settings, tokenizer: Any) -> dict[str, Any]:
  """Tokenizes one input shard, makes its instances, writes them shuffled to its file.

  A training shard also gets a file per settings.extra_seq_lengths, made from the same
  tokenized documents with the random stream a prepare at that length alone would use: the
  same instances as that prepare, for the price of one read and one tokenization.

  Args:
    task: The shard: its kind, index, documents and output file name.
    settings: Instance settings and the output directory.
    tokenizer: Has encode_batch, pad_id, cls_id, sep_id.

  Returns:
    The shard's counts: documents, skipped_documents (no tokens), single_sentence_documents,
    instances, random_next, tokens, length_histogram (instances per HISTOGRAM_BUCKET_WIDTH
    tokens of length), file; and 'extra', the instances, random_next, tokens,
    length_histogram, file and max_seq_length of each extra length.
  """
  documents = tokenize_documents(task.documents, tokenizer)
  result = {"documents": len(documents),
            "skipped_documents": len(task.documents) - len(documents),
            # No sentence pair within them: with NSP they give random-next instances only.
            "single_sentence_documents": sum(len(document) == 1 for document in documents)}
  # The instance builders shuffle the documents in place: each length gets its own list.
  result.update(_write_instances(task, list(documents), settings, settings.max_seq_length,
                                 task.filename, tokenizer))
  extra_lengths = settings.extra_seq_lengths if task.kind == "train" else ()
  result["extra"] = [
      _write_instances(task, list(documents), settings, length,
                       length_filename(task.filename, length), tokenizer)
      for length in extra_lengths]
  return result


def _write_instances(task: Task, documents: list[instances_lib.Document], settings: Settings,
                     max_seq_length: int, filename: str, tokenizer: Any) -> dict[str, Any]:
  rng = shard_rng(settings.seed, task.kind, task.index)
  dupe_factor = settings.dupe_factor if task.kind == "train" else 1
  if settings.next_sentence_prediction:
    instances = instances_lib.create_nsp_instances(
        documents, max_seq_length, settings.short_seq_prob, dupe_factor, rng,
        tokenizer.cls_id, tokenizer.sep_id)
  else:
    instances = instances_lib.pack_full_sentences(
        documents, max_seq_length, dupe_factor, rng, tokenizer.cls_id, tokenizer.sep_id)
  # Kept serialized (~4 bytes a token), not as lists of ints (~36 bytes a token), until the
  # shuffle: a shard's instances are its biggest memory.
  serialized = []
  histogram = [0] * (max_seq_length // HISTOGRAM_BUCKET_WIDTH + 1)
  num_random_next = num_tokens = 0
  encode, pad_id = records.encode_instance, tokenizer.pad_id
  for instance in instances:
    serialized.append(encode(instance, max_seq_length, pad_id))
    length = len(instance.tokens)
    num_tokens += length
    num_random_next += instance.is_random_next
    histogram[length // HISTOGRAM_BUCKET_WIDTH] += 1
  rng.shuffle(serialized)
  write_records(os.path.join(settings.output_dir, filename), serialized)
  return {"instances": len(serialized), "random_next": num_random_next, "tokens": num_tokens,
          "length_histogram": histogram, "file": filename, "max_seq_length": max_seq_length}


def extra_results_by_length(results: Sequence[dict[str, Any]]
                            ) -> list[tuple[int, list[dict[str, Any]]]]:
  """(length, each training shard's result at that length, in shard order) per extra length."""
  by_length: dict[int, list[dict[str, Any]]] = {}
  for result in results:
    if result["file"] != EVAL_FILENAME:
      for extra in result.get("extra", []):  # Results of older runs may lack it.
        by_length.setdefault(extra["max_seq_length"], []).append(extra)
  return sorted(by_length.items())


# The tokenizer of a worker process, loaded once by _init_worker.
_worker_tokenizer = None


def _init_worker(load_tokenizer: Callable[[], Any]) -> None:
  global _worker_tokenizer
  _worker_tokenizer = load_tokenizer()


def _run_in_worker(task: Task, settings: Settings) -> dict[str, Any]:
  return process_shard(task, settings, _worker_tokenizer)


def iter_tasks(documents: Iterable[Sequence[str]], num_eval_documents: int,
               documents_per_shard: int, num_hosts: int, host_index: int,
               counters: collections.Counter) -> Iterator[Task]:
  """This host's tasks, in stream order: eval first (host 0), then its input shards.

  Counts into counters: 'documents_read' as it goes, 'num_tasks' once the stream is exhausted.
  """
  stream = iter(documents)
  eval_documents = list(itertools.islice(stream, num_eval_documents))
  counters["documents_read"] += len(eval_documents)
  num_tasks = 0
  if host_index == 0:
    num_tasks += 1
    yield Task("eval", 0, eval_documents, EVAL_FILENAME)
  for shard_index in itertools.count():
    mine = shard_index % num_hosts == host_index
    if mine:
      shard = list(itertools.islice(stream, documents_per_shard))
      num_read = len(shard)
    else:
      num_read = sum(1 for _ in itertools.islice(stream, documents_per_shard))
    counters["documents_read"] += num_read
    if not num_read:
      counters["num_tasks"] = num_tasks
      return
    if mine:
      num_tasks += 1
      yield Task("train", shard_index, shard, f"train-{shard_index:05d}.tfrecord")


class Progress:
  """A progress line on stderr, at most every interval_s seconds."""

  def __init__(self, interval_s: float | None, counters: collections.Counter, host: str):
    self._interval_s = interval_s
    self._counters = counters
    self._host = host
    self.start_time = time.time()
    self._last_time = self.start_time
    self.files_done = self.instances = 0

  def add(self, result: dict[str, Any]) -> None:
    self.files_done += 1
    self.instances += result["instances"]
    self.maybe_print()

  def maybe_print(self, force: bool = False, message: str = "") -> None:
    now = time.time()
    if self._interval_s is None or (not force and now - self._last_time < self._interval_s):
      return
    self._last_time = now
    # The number of files is known once the stream has been read to its end.
    total = self._counters.get("num_tasks", "?")
    print(f"prepare{self._host}: files {self.files_done}/{total}, "
          f"{self._counters['documents_read']} documents read, {self.instances} instances, "
          f"{now - self.start_time:.0f} s{message}",
          file=sys.stderr, flush=True)


def run_tasks(tasks: Iterator[Task], settings: Settings, load_tokenizer: Callable[[], Any],
              tokenizer: Any, num_workers: int, progress: Progress) -> list[dict[str, Any]]:
  """Runs the tasks in this process, or in a pool when there are two shards or more."""
  # Look ahead to two training shards: a smaller input is not worth starting processes for.
  lookahead = []
  for task in tasks:
    lookahead.append(task)
    if sum(t.kind == "train" for t in lookahead) >= 2:
      break
  tasks = itertools.chain(lookahead, tasks)
  results = []
  if num_workers <= 1 or sum(t.kind == "train" for t in lookahead) < 2:
    for task in tasks:
      results.append(process_shard(task, settings, tokenizer))
      progress.add(results[-1])
    return results

  # forkserver: workers fork from a clean process that imported this module once, never from
  # this one, which may hold TF or tf.data threads (TFDS input) that fork does not copy.
  context = multiprocessing.get_context(
      "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
  if context.get_start_method() == "forkserver":
    context.set_forkserver_preload(["bert_jax.pretraining.data.shards"])
  pending: collections.deque = collections.deque()
  with context.Pool(num_workers, initializer=_init_worker, initargs=(load_tokenizer,)) as pool:
    for task in tasks:
      # At most two shards a worker in flight: memory stays bounded by shards, not the corpus.
      while len(pending) >= 2 * num_workers:
        results.append(_wait(pending.popleft(), progress))
      pending.append(pool.apply_async(_run_in_worker, (task, settings)))
    while pending:
      results.append(_wait(pending.popleft(), progress))
  return results


def _wait(result: multiprocessing.pool.AsyncResult, progress: Progress) -> dict[str, Any]:
  while not result.ready():
    result.wait(1.0)
    progress.maybe_print()
  value = result.get()
  progress.add(value)
  return value
