"""Config checks that run before anything is built or compiled; each error names its field."""

import jax
import ml_collections
from jax.sharding import Mesh

from bert_jax import errors
from bert_jax import modeling

_SOURCES = ("embedded", "text", "tfds", "tfrecord")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError, with a one-line message naming the field, on a config that cannot run."""
  modeling.BertConfig.from_dict(config.model.to_dict())  # Its own checks (heads, act, dtype).
  data, train, model = config.data, config.train, config.model
  if data.source not in _SOURCES:
    raise errors.UserError(f"data.source={data.source!r} is not one of {', '.join(_SOURCES)}")
  if data.source in ("text", "tfrecord") and not data.input_files:
    raise errors.UserError(f"data.input_files is empty but data.source={data.source!r} needs "
                           "files")
  if data.prepare_seq_length and not (
      data.max_seq_length <= data.prepare_seq_length <= model.max_position_embeddings):
    raise errors.UserError(
        f"data.prepare_seq_length={data.prepare_seq_length} must be between "
        f"data.max_seq_length={data.max_seq_length} and "
        f"model.max_position_embeddings={model.max_position_embeddings}")
  if data.max_seq_length > model.max_position_embeddings:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} is larger than "
                     f"model.max_position_embeddings={model.max_position_embeddings}")
  if data.max_seq_length < 8:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} is too short for a sentence "
                     "pair ([CLS] A [SEP] B [SEP])")
  if not 1 <= data.max_predictions_per_seq <= data.max_seq_length - 3:
    raise errors.UserError(f"data.max_predictions_per_seq={data.max_predictions_per_seq} must be "
                     f"between 1 and data.max_seq_length - 3 = {data.max_seq_length - 3}")
  if not 0 < data.masked_lm_prob < 1:
    raise errors.UserError(f"data.masked_lm_prob={data.masked_lm_prob} must be in (0, 1)")
  for field in ("batch_size", "grad_accum_steps", "num_train_steps", "eval_batch_size",
                "log_every_steps",
                "checkpoint_every_steps", "max_checkpoints_to_keep"):
    if train[field] < 1:
      raise errors.UserError(f"train.{field}={train[field]} must be at least 1")
  if train.num_warmup_steps < 0:
    raise errors.UserError(f"train.num_warmup_steps={train.num_warmup_steps} must be at least 0")
  if train.learning_rate <= 0:
    raise errors.UserError(f"train.learning_rate={train.learning_rate} must be positive")


def validate_batch_sizes(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  """Global batches must split evenly over hosts and over the data-parallel devices."""
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  for field in ("batch_size", "eval_batch_size"):
    size = config.train[field]
    if size % data_parallel:
      raise errors.UserError(f"train.{field}={size} is not divisible by the data-parallel size "
                       f"{data_parallel} (mesh.data * mesh.fsdp)")
    if size % jax.process_count():
      raise errors.UserError(f"train.{field}={size} is not divisible by the {jax.process_count()} "
                       "processes")
  accum = config.train.grad_accum_steps
  if config.train.batch_size % (accum * data_parallel):
    raise errors.UserError(
        f"train.batch_size={config.train.batch_size} is not divisible by train.grad_accum_steps="
        f"{accum} times the data-parallel size {data_parallel}: micro-batches must split evenly "
        f"over the devices")


def validate_vocab(config: ml_collections.ConfigDict, tokenizer_vocab_size: int) -> None:
  """Ids at or past model.vocab_size would silently gather garbage (the original made NaNs)."""
  if tokenizer_vocab_size > config.model.vocab_size:
    raise errors.UserError(
        f"model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
        f"vocabulary ({tokenizer_vocab_size}): set --config.model.vocab_size={tokenizer_vocab_size}")
