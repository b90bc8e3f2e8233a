"""The pre-training input on each host: its own records -> shuffle -> truncate -> mask -> batch.

Records are sentence-pair instances as TFRecords with the original feature names: the unmasked
ones bert_jax/pretraining/data/prepare.py writes (masked here, dynamically), or the statically
masked ones google-research/bert's create_pretraining_data.py writes (used as they are).

Determinism: the training stream is a sequence of epochs, each a seeded shuffle of this host's
files and records; example k of the stream (counting from the start of training) is masked
with a stateless seed made of (seed, k) (of (seed, k * process_count + process_index) with
several hosts). So the stream is a pure function of (seed, example index), and a run resumed at
example k (`start_index=k`) sees exactly the batches it would have seen; with
`records_per_epoch` known, resuming skips whole epochs without reading them. Each host's stream
depends on the number of hosts: resuming with another number keeps the step count and the
state, not the data order.
"""

from collections.abc import Iterator, Sequence
import dataclasses
import functools
import json
import os
import re
from typing import Any

from google.protobuf import message as message_lib
import tensorflow as tf

from bert_jax import errors
from bert_jax import files as files_lib
from bert_jax.pretraining.data import damaged_records
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import prepare

_MASKED_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
# Files read at once by each host.
_CYCLE_LENGTH = 16
# Parallel parse/mask calls (every host core) and batches prefetched ahead of the train step.
_PARALLEL_CALLS = os.cpu_count() or 1
_PREFETCH_BATCHES = 4
# Makes the truncation seeds a stream of their own, apart from the masks' seeds.
_TRUNCATION_SALT = 0x5BD1E995


def read_metadata(data_dir: str) -> dict[str, Any]:
  """Reads the metadata.json of a prepared data directory.

  Returns:
    The metadata, with 'train_files' and 'eval_files' as full paths.

  Raises:
    errors.UserError: If metadata.json is missing: prepare never ran there, or was interrupted.
  """
  path = os.path.join(data_dir, prepare.METADATA_FILENAME)
  if not tf.io.gfile.exists(path):
    raise errors.UserError(
        f"{path} not found: {data_dir!r} is not a complete prepared data directory (prepare "
        f"did not run there, or was interrupted; run it again)")
  with tf.io.gfile.GFile(path, "r") as f:
    return prepare.with_full_paths(json.load(f), data_dir)


def list_files(file_patterns: Sequence[str] | str) -> list[str]:
  """TFRecord files matching the globs (see files.match_files)."""
  return files_lib.match_files(file_patterns, "TFRecord files")


def numpy_iterator(dataset: tf.data.Dataset, files: Sequence[str],
                  field: str) -> Iterator[dict[str, Any]]:
  """dataset.as_numpy_iterator(), with a damaged record a UserError naming its file and offset.

  tf.data finds a damaged record only when it reaches it, and its error does not name the
  file: `files` are then scanned (damaged_records.scan_files) to name it.
  """
  iterator = dataset.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      # Drop tf's "{{function_node ...}}" prefix and " [Op:...]" suffix: the cause is between.
      message = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", e.message).strip()
      found = damaged_records.scan_files(files)
      if found:
        raise errors.UserError(
            f"{field}: a damaged record in {damaged_records.describe(found)}: set "
            f"--config.data.skip_damaged_records=true to go past damaged records") from None
      shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
      raise errors.UserError(f"{field}: a damaged record in {shown}: {message}") from e
    yield batch


@dataclasses.dataclass(frozen=True)
class RecordFormat:
  """What the records hold: their length and, for the original's files, static masks."""
  seq_length: int
  max_predictions_per_seq: int | None  # Set when the records are already masked.


def inspect_records(files: Sequence[str]) -> RecordFormat:
  """Reads the first record to learn the format (ours, or the original's masked one).

  Checks first that every file starts like a TFRecord file
  (damaged_records.check_tfrecord_files).
  """
  damaged_records.check_tfrecord_files(files, "TFRecord files")
  first = numpy_iterator(tf.data.TFRecordDataset(list(files)).take(1), files, "TFRecord files")
  for record in first:
    try:
      example = tf.train.Example.FromString(record)
    except message_lib.DecodeError as e:
      raise errors.UserError(f"{files[0]}: its records are not tf.train.Example protos; not "
                             "BERT pre-training instances") from e
    features = example.features.feature
    if "input_ids" not in features:
      raise errors.UserError(f"{files[0]}: records have no 'input_ids' feature; not BERT "
                             "pre-training instances")
    predictions = (len(features["masked_lm_positions"].int64_list.value)
                   if "masked_lm_positions" in features else None)
    return RecordFormat(len(features["input_ids"].int64_list.value), predictions)
  raise errors.UserError(f"no record in {', '.join(files[:3])}{'...' if len(files) > 3 else ''}")


def _check_format(record_format: RecordFormat, first_file: str, max_seq_length: int,
                  masking_config: masking.MaskingConfig) -> None:
  """The records can serve this run's lengths: longer unmasked ones are cut, masked ones not.

  Raises:
    errors.UserError: Naming the config field and the file.
  """
  premasked = record_format.max_predictions_per_seq is not None
  if premasked and record_format.seq_length != max_seq_length:
    raise errors.UserError(
        f"data.max_seq_length={max_seq_length} but the statically masked records in "
        f"{first_file} have length {record_format.seq_length}; masked records cannot be "
        f"truncated")
  if premasked and record_format.max_predictions_per_seq != masking_config.max_predictions_per_seq:
    raise errors.UserError(
        f"data.max_predictions_per_seq={masking_config.max_predictions_per_seq} but the masked "
        f"records in {first_file} have {record_format.max_predictions_per_seq}")
  if record_format.seq_length < max_seq_length:
    raise errors.UserError(
        f"data.max_seq_length={max_seq_length} is longer than the records in {first_file} "
        f"({record_format.seq_length}): prepare the data at the longest length you train with")


def _parse(record: tf.Tensor, record_format: RecordFormat) -> dict[str, tf.Tensor]:
  """One serialized instance -> its features as int32 (TF stores int64), weights float32."""
  length = tf.io.FixedLenFeature([record_format.seq_length], tf.int64)
  spec = {"input_ids": length, "input_mask": length, "segment_ids": length,
          "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}
  predictions = record_format.max_predictions_per_seq
  if predictions is not None:
    spec["masked_lm_positions"] = tf.io.FixedLenFeature([predictions], tf.int64)
    spec["masked_lm_ids"] = tf.io.FixedLenFeature([predictions], tf.int64)
    spec["masked_lm_weights"] = tf.io.FixedLenFeature([predictions], tf.float32)
  features = tf.io.parse_single_example(record, spec)
  features = {name: value if value.dtype == tf.float32 else tf.cast(value, tf.int32)
              for name, value in features.items()}
  features["next_sentence_labels"] = features["next_sentence_labels"][0]  # []
  return features


def truncate_instance(features: dict[str, tf.Tensor], max_seq_length: int, seed: tf.Tensor,
                      cls_id: int, sep_id: int) -> dict[str, tf.Tensor]:
  """Cuts a longer unmasked instance down to max_seq_length, as the original truncates pairs.

  This is what lets one prepared data set (say at 512) serve a 128 phase too: tokens are taken
  from the longer segment until the pair fits, each from its front or back at random (the
  original's truncate_seq_pair); B still follows A (or not) as its label says. A single segment
  (NSP off) keeps its beginning.

  Args:
    features: input_ids, input_mask, segment_ids [L0] int32 with L0 >= max_seq_length.
    max_seq_length: L, the length wanted.
    seed: [2] int64 stateless seed of the front/back choices.
    cls_id, sep_id: The special ids to write.

  Returns:
    The features with input_ids, input_mask, segment_ids of length L.
  """
  input_ids, input_mask = features["input_ids"], features["input_mask"]
  segment_ids = features["segment_ids"]
  real = input_mask == 1
  length_a = tf.reduce_sum(tf.cast(real & (segment_ids == 0), tf.int32)) - 2  # [CLS] A [SEP]
  length_b = tf.maximum(tf.reduce_sum(tf.cast(real & (segment_ids == 1), tf.int32)) - 1, 0)
  has_b = length_b > 0
  room = max_seq_length - tf.where(has_b, 3, 2)
  excess = tf.maximum(length_a + length_b - room, 0)
  # The original removes one token at a time from the longer segment (B on ties): first the
  # difference, then alternately, B first.
  gap = tf.abs(length_a - length_b)
  from_longer = tf.minimum(excess, gap)
  rest = excess - from_longer
  cut_a = tf.where(length_a > length_b, from_longer, 0) + rest // 2
  cut_b = tf.where(length_a > length_b, 0, from_longer) + rest - rest // 2
  cut_a = tf.where(has_b, cut_a, excess)  # One segment: the excess comes off A's end.
  # Each removed token comes off the front or the back with probability 1/2.
  front = tf.random.stateless_binomial(
      [2], seed, counts=tf.cast(tf.stack([cut_a, cut_b]), tf.float64),
      probs=tf.constant([0.5, 0.5], tf.float64),
      output_dtype=tf.int32)
  front_a = tf.where(has_b, front[0], 0)
  front_b = front[1]
  new_a, new_b = length_a - cut_a, length_b - cut_b

  # Where each output position reads from: [CLS] A' [SEP] B' [SEP] then padding.
  position = tf.range(max_seq_length)
  b_start = new_a + 2
  end = tf.where(has_b, b_start + new_b + 1, new_a + 2)  # One past the last real token.
  source = tf.where(position <= new_a, position + front_a,  # [CLS] and A'
                    (length_a + 2) + front_b + (position - b_start))  # B'
  source = tf.clip_by_value(source, 0, tf.shape(input_ids)[0] - 1)
  ids = tf.gather(input_ids, source)
  ids = tf.where(position == 0, cls_id, ids)
  is_sep = (position == new_a + 1) | (has_b & (position == end - 1))
  ids = tf.where(is_sep, sep_id, ids)
  in_sequence = position < end
  features = dict(features)
  features["input_ids"] = tf.where(in_sequence, ids, 0)
  features["input_mask"] = tf.cast(in_sequence, tf.int32)
  features["segment_ids"] = tf.cast(in_sequence & (position >= b_start) & has_b, tf.int32)
  return features


def files_of_host(files: list[str], process_index: int,
                process_count: int) -> tuple[list[str], bool]:
  """This host's files, and whether records (not files) must be split between hosts.

  With at least as many files as hosts, each host reads only its own files. With fewer, every
  host reads every file and keeps every process_count-th record.
  """
  if len(files) >= process_count:
    return files[process_index::process_count], False
  return files, True


# A Python generator inside: AutoGraph cannot convert it, and would say so.
@tf.autograph.experimental.do_not_convert
def _file_records(name: tf.Tensor, damaged: dict[str, damaged_records.FileDamage]
                  ) -> tf.data.Dataset:
  """The records of the file `name`: tf.data's reader, or for a file in `damaged` a Python one
  that goes past its damaged records (slower, so only there)."""
  if not damaged:
    return tf.data.TFRecordDataset(name)
  is_damaged = tf.reduce_any(tf.equal(name, list(damaged)))
  # Each branch reads no file when the other one is the file's reader ("" = none).
  clean = tf.data.TFRecordDataset(tf.boolean_mask(tf.reshape(name, [1]),
                                                  tf.reshape(~is_damaged, [1])))

  def good_records(path: bytes):
    if path:
      yield from damaged_records.good_records(path.decode(), damaged[path.decode()].damaged)

  repaired = tf.data.Dataset.from_generator(
      good_records, args=(tf.where(is_damaged, name, ""),),
      output_signature=tf.TensorSpec([], tf.string))
  return clean.concatenate(repaired)


def host_records_per_epoch(files: Sequence[str], file_counts: dict[str, int],
                           process_index: int, process_count: int) -> int:
  """Records this host reads per training epoch (files as list_files gives them)."""
  host_files, split_records = files_of_host(list(files), process_index, process_count)
  total = sum(file_counts[f] for f in host_files)
  if split_records:  # Every process_count-th record, from process_index.
    return len(range(process_index, total, process_count))
  return total


def pretraining_dataset(file_patterns: Sequence[str] | str,
                        *,
                        batch_size: int,
                        max_seq_length: int,
                        masking_config: masking.MaskingConfig,
                        seed: int,
                        is_training: bool,
                        start_index: int = 0,
                        process_index: int = 0,
                        process_count: int = 1,
                        shuffle_buffer_size: int = 10_000,
                        static_masks: bool = False,
                        records_per_epoch: int | None = None,
                        damaged: dict[str, damaged_records.FileDamage] | None = None
                        ) -> tf.data.Dataset:
  """This host's batches of masked pre-training examples.

  Args:
    file_patterns: Globs of TFRecord files (a list, or one comma-separated string).
    batch_size: Examples per batch on this host (the global batch / process_count).
    max_seq_length: L; longer unmasked records are truncated to it (sequence-length phases).
    masking_config: The special ids and the masking recipe.
    seed: Seed of the shuffles, truncations and masks.
    is_training: Training stream (shuffled, endless) or eval stream (one fixed pass in file
      order, masks fixed, a last partial batch kept: inputs.eval_batches pads it).
    start_index: Training only: examples of this host's stream already consumed.
    process_index: This host, jax.process_index().
    process_count: Number of hosts, jax.process_count().
    shuffle_buffer_size: Records in the shuffle buffer.
    static_masks: Mask each record the same way in every epoch (the original's recipe);
      records that are already masked are always used as they are.
    records_per_epoch: Records this host reads per epoch, if known: resuming then skips
      whole epochs without reading them.
    damaged: Files with damaged records (damaged_records.scan_files): their other records are
      read, in order, as if the damaged ones had never been written.

  Returns:
    A dataset of dicts: input_ids, input_mask, segment_ids [B, L] int32; masked_lm_positions,
    masked_lm_ids [B, P] int32; masked_lm_weights [B, P] float32; next_sentence_labels [B] int32.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if start_index < 0 or batch_size < 1:
    raise ValueError(f"need start_index >= 0 and batch_size >= 1; got {start_index}, "
                     f"{batch_size}")
  files = list_files(file_patterns)
  record_format = inspect_records(files)
  _check_format(record_format, files[0], max_seq_length, masking_config)
  premasked = record_format.max_predictions_per_seq is not None

  if is_training:
    host_files, split_records = files_of_host(files, process_index, process_count)
  else:
    # Eval splits records, not files: every host must get the same number of batches.
    host_files, split_records = files, process_count > 1

  def records_of_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch
    names = tf.data.Dataset.from_tensor_slices(host_files)
    if is_training:
      # Every host shuffles the file list with the same seed, so record-level splitting
      # below still gives disjoint shares.
      names = names.shuffle(len(host_files), seed=epoch_seed)
    # Eval reads its files one after the other: a fixed, readable order.
    cycle_length = min(len(host_files), _CYCLE_LENGTH) if is_training else 1
    records = names.interleave(
        functools.partial(_file_records, damaged=damaged or {}), cycle_length=cycle_length,
        num_parallel_calls=min(cycle_length, _PARALLEL_CALLS), deterministic=True)
    if split_records:
      records = records.shard(process_count, process_index)
    if is_training:
      records = records.shuffle(shuffle_buffer_size, seed=epoch_seed)
    return records

  if is_training:
    first_epoch, skip = 0, start_index
    if records_per_epoch:
      first_epoch, skip = divmod(start_index, records_per_epoch)
    dataset = tf.data.Dataset.range(first_epoch, 2**62).flat_map(records_of_epoch)
    # (example index in the stream, record): the index, not any stateful RNG, seeds the masks.
    dataset = dataset.enumerate(start=start_index - skip).skip(skip)
  else:
    dataset = records_of_epoch(tf.constant(0, tf.int64)).enumerate()

  def parse_truncate_mask(index: tf.Tensor, record: tf.Tensor) -> dict[str, tf.Tensor]:
    features = _parse(record, record_format)
    if premasked:
      return features
    # Static masks depend on the record itself, dynamic ones on its place in the stream:
    # example k of host h is example k * process_count + h of all hosts together, so no two
    # hosts draw the same masks, and where records are dealt out in turn (eval) each record
    # gets the masks it gets in a single process.
    key = (tf.strings.to_hash_bucket_fast(record, 2**62) if static_masks
           else index * process_count + process_index)
    if record_format.seq_length > max_seq_length:
      truncation_seed = tf.stack([tf.constant(seed ^ _TRUNCATION_SALT, tf.int64), key])
      features = truncate_instance(features, max_seq_length, truncation_seed,
                                   masking_config.cls_id, masking_config.sep_id)
    mask_seed = tf.stack([tf.constant(seed, tf.int64), key])
    return masking.mask_example(features, mask_seed, masking_config)

  dataset = dataset.map(parse_truncate_mask, num_parallel_calls=_PARALLEL_CALLS,
                        deterministic=True)
  # Static shapes: jit compiles train_step once. Eval keeps its last records (padded later).
  dataset = dataset.batch(batch_size, drop_remainder=is_training)
  dataset = dataset.prefetch(_PREFETCH_BATCHES)
  options = tf.data.Options()
  # No autotuning: its background optimisation loop sometimes held the iterator's destructor,
  # and so the end of a run, for half a minute; fixed parallelism keeps up as well here.
  options.autotune.enabled = False
  return dataset.with_options(options)
