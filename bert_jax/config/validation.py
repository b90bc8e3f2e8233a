"""Config checks that run before anything is built or compiled; each error names its field."""

import difflib
import importlib
import re

from etils import epath
import jax
import ml_collections
from jax.sharding import Mesh

from bert_jax import errors
from bert_jax.config import base
from bert_jax.config import finetune
from bert_jax.model import attention
from bert_jax.model import modeling
from bert_jax.runtime import nan_guard
from bert_jax.runtime import optim
from bert_jax.runtime import precision
from bert_jax.runtime import sharding

RNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")  # jax.random.key(..., impl=)
_SOURCES = ("embedded", "text", "tfds", "tfrecord")
# The config every config of a mode starts from: what decides which fields exist.
_REFERENCE_CONFIGS = {"pretrain": "bert_jax.config.base", "eval": "bert_jax.config.base",
                      "encode": "bert_jax.config.base", "finetune": "bert_jax.config.finetune",
                      "predict": "bert_jax.config.base"}
_MODE_NAMES = [repr(mode) for mode in _REFERENCE_CONFIGS]
# For messages: "'pretrain', 'eval', 'encode', 'finetune' or 'predict'".
MODES = ", ".join(_MODE_NAMES[:-1]) + " or " + _MODE_NAMES[-1]


def _field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Dotted paths of the leaves (non-ConfigDict values) of a config."""
  paths = []
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      paths.extend(_field_paths(value, f"{prefix}{name}."))
    else:
      paths.append(f"{prefix}{name}")
  return paths


def _reference_fields(mode: str) -> tuple[str, set[str]] | None:
  """(module, its field paths) of the schema of `mode` (inside the package: there from any
  directory and from an installed wheel); None for an unknown mode."""
  module_name = _REFERENCE_CONFIGS.get(mode)
  if module_name is None:
    return None
  return module_name, set(_field_paths(importlib.import_module(module_name).get_config()))


def _did_you_mean(path: str, known: set[str]) -> str:
  close = difflib.get_close_matches(path, sorted(known), n=1)
  return f" (did you mean {close[0]}?)" if close else ""


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Every field of `config` exists in its mode's reference config, and none is missing.

  A config file of one's own that sets `config.train.bacth_size = 8` adds a field nothing
  reads, and the run would silently train with the default batch size.

  Raises:
    errors.UserError: Naming the first unknown (or missing) field.
  """
  if "mode" not in config:
    raise errors.UserError(f"config.mode is missing: {MODES}")
  if config.mode not in _REFERENCE_CONFIGS:
    raise errors.UserError(f"config.mode={config.mode!r} is not {MODES}")
  # predict runs with a pre-training config (fill-mask) or a fine-tuning one (the task's
  # columns and lengths): the one the config's fields show.
  mode = "finetune" if config.mode == "predict" and "task" in config else config.mode
  reference = _reference_fields(mode)
  if reference is None:
    return
  module_name, known = reference
  reference_file = module_name.replace(".", "/") + ".py"
  fields = set(_field_paths(config))
  unknown = sorted(fields - known)
  if unknown:
    raise errors.UserError(f"unknown config field {unknown[0]}: {reference_file} has no such "
                           f"field{_did_you_mean(unknown[0], known)}")
  missing = sorted(known - fields)
  if missing:
    raise errors.UserError(f"config field {missing[0]} is missing: configs of "
                           f"mode={config.mode!r} start from {reference_file}, which has it")


def unknown_override(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why `--config.<path>=...` names no field of `config`; None when it does name one.

  ml_collections reports such an override with a traceback from deep inside flag parsing, and
  without the path: this is the message main prints instead.
  """
  node = config
  parts = path.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      prefix = "".join(f"{p}." for p in parts[:depth])
      names = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
      known = {prefix + name for name in names}
      return f"unknown config field {path}{_did_you_mean(prefix + part, known)}"
    node = node[part]
  return None


def check_sweep(sweep: ml_collections.ConfigDict) -> None:
  """config.sweep's learning rates are positive numbers and its seeds at least 1."""
  rates = sweep.learning_rates
  for rate in rates if isinstance(rates, (tuple, list)) else (rates,):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
      raise errors.UserError(f"sweep.learning_rates={rates}: each must be a positive number, "
                             "e.g. --config.sweep.learning_rates=5e-5,4e-5,3e-5,2e-5")
  if not isinstance(sweep.seeds, int) or sweep.seeds < 1:
    raise errors.UserError(f"sweep.seeds={sweep.seeds}: must be at least 1")


def check_rng_impl(config: ml_collections.ConfigDict) -> None:
  """`jax.random.key` would otherwise fail only once the job reaches init."""
  if config.rng_impl not in RNG_IMPLS:
    raise errors.UserError(f"rng_impl={config.rng_impl!r} is not one of {', '.join(RNG_IMPLS)}")


def validate(config: ml_collections.ConfigDict, mesh: Mesh | None = None,
             platform: str | None = None) -> None:
  """Every check of a config that can run before data is read or anything is built; it also
  turns model.dtype='auto' into the platform's dtype (runtime/precision.py).

  The one entry of a run's config into validation: each mode calls it first; the checks of
  what only data or a checkpoint can tell (the vocabulary's size, a loaded model's shape) are
  made where those are read.

  Args:
    config: A full run config, of any mode.
    mesh: The mesh the run will use (its data-parallel size splits the batches); None = the
      one config.mesh makes of this job's devices.
    platform: The backend the run compiles for; None = jax.default_backend() (call it after
      jax.distributed.initialize). aot.py passes 'tpu': it compiles for a TPU from any host.

  Raises:
    errors.UserError: With a one-line message naming the field.
  """
  check_fields(config)
  if mesh is None:
    mesh = sharding.create_mesh(config.mesh)
  check_rng_impl(config)
  # model.dtype='auto' becomes the platform's dtype here (main.py has done it already, to say
  # why on its startup line); every mode, and aot for a TPU, builds its model after this.
  precision.resolve_dtype(config, platform or jax.default_backend())
  modeling.BertConfig.from_config(config.model)  # Its own checks (heads, act, dtype).
  attention.check_platform(config.model.attention, platform or jax.default_backend())
  nan_guard.NonFiniteGuard(config.train.nan_policy, config.train.debug_nan_steps)  # Its checks.
  if "sweep" in config:
    check_sweep(config.sweep)
  steps = re.fullmatch(r"(\d+)(?:-(\d+))?", str(config.profile.steps))
  if config.profile.steps and not (steps and 1 <= int(steps[1]) <= int(steps[2] or steps[1])):
    raise errors.UserError(f"profile.steps={config.profile.steps!r} is not a step ('20') or a "
                           "range of steps ('20-25', first <= last)")
  if config.mode == "finetune":
    _check_finetuning(config, mesh)
  elif config.mode in ("encode", "predict"):
    _check_batch_size(config[config.mode], f"{config.mode}.batch_size", mesh)
    if config.mode == "predict" and config.predict.top_k < 1:
      raise errors.UserError(f"predict.top_k={config.predict.top_k} must be at least 1")
  else:  # 'pretrain' and 'eval': the pre-training data and eval.
    _check_pretraining(config)
    validate_batch_sizes(config, mesh)
  _check_init_checkpoint(config.init_checkpoint)


def _check_init_checkpoint(path: str) -> None:
  """A mistyped path is found now, not after hours of data preparation."""
  # A Google TF checkpoint is named by its prefix: bert_model.ckpt (+ .index, .data-*).
  # epath, not tf.io.gfile: local and gs:// alike, and no TensorFlow here (bench/device_check.py).
  if path and not (epath.Path(path).exists() or epath.Path(f"{path}.index").exists()):
    raise errors.UserError(f"init_checkpoint={path} does not exist (nor {path}.index)")


def _check_training(train: ml_collections.ConfigDict) -> None:
  """The train fields pre-training and fine-tuning share."""
  for field in ("log_every_steps", "checkpoint_every_steps", "max_checkpoints_to_keep"):
    if train[field] < 1:
      raise errors.UserError(f"train.{field}={train[field]} must be at least 1")
  if train.eval_every_steps < 0:
    raise errors.UserError(f"train.eval_every_steps={train.eval_every_steps} must be at least 0 "
                           "(0 = only at the end)")
  if train.learning_rate <= 0:
    raise errors.UserError(f"train.learning_rate={train.learning_rate} must be positive")
  if train.optimizer not in optim.OPTIMIZERS:
    raise errors.UserError(f"train.optimizer={train.optimizer!r} is not one of "
                           f"{', '.join(repr(name) for name in optim.OPTIMIZERS)}")
  if train.schedule not in optim.SCHEDULES:
    raise errors.UserError(f"train.schedule={train.schedule!r} is not one of "
                           f"{', '.join(repr(name) for name in optim.SCHEDULES)}")


def _check_pretraining(config: ml_collections.ConfigDict) -> None:
  data, train, model = config.data, config.train, config.model
  if config.mode == "pretrain":
    attention.check_dropout(model.attention, model.attention_probs_dropout_prob)
  if data.source not in _SOURCES:
    raise errors.UserError(f"data.source={data.source!r} is not one of {', '.join(_SOURCES)}")
  check_holdout(data)
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
  if not 0 <= data.short_seq_prob <= 1:
    raise errors.UserError(f"data.short_seq_prob={data.short_seq_prob} must be between 0 and 1")
  for field in ("dupe_factor", "documents_per_shard", "shuffle_buffer_size"):
    if data[field] < 1:
      raise errors.UserError(f"data.{field}={data[field]} must be at least 1")
  for field in ("max_documents", "vocab_input_sentence_size"):
    if data[field] < 0:
      raise errors.UserError(f"data.{field}={data[field]} must be at least 0 (0 = all)")
  if train.max_eval_steps < 0:
    raise errors.UserError(f"train.max_eval_steps={train.max_eval_steps} must be at least 0 (0 = "
                           "the whole held-out set)")
  for field in ("batch_size", "grad_accum_steps", "num_train_steps", "eval_batch_size"):
    if train[field] < 1:
      raise errors.UserError(f"train.{field}={train[field]} must be at least 1")
  _check_training(train)
  if train.num_warmup_steps < 0:
    raise errors.UserError(f"train.num_warmup_steps={train.num_warmup_steps} must be at least 0")
  if not 0 <= train.target_mlm_accuracy <= 1:
    raise errors.UserError(f"train.target_mlm_accuracy={train.target_mlm_accuracy} must be "
                           "between 0 (off) and 1")
  check_phase2(config)


def check_holdout(data: ml_collections.ConfigDict, prefix: str = "data.") -> None:
  """One line naming the field (or flag, prefix '--') when the hold-out fields are wrong."""
  if not 0 <= data.eval_fraction <= 0.5:
    raise errors.UserError(f"{prefix}eval_fraction={data.eval_fraction} must be between 0 and "
                           "0.5 (the fraction of the documents held out for eval)")
  if not 0 <= data.min_eval_documents <= data.max_eval_documents:
    raise errors.UserError(
        f"{prefix}min_eval_documents={data.min_eval_documents} and "
        f"{prefix}max_eval_documents={data.max_eval_documents}: need 0 <= min <= max")
  if data.num_eval_documents < -1:
    raise errors.UserError(f"{prefix}num_eval_documents={data.num_eval_documents} must be at "
                           "least 0, or -1 to hold out data.eval_fraction of the documents")


def _check_finetuning(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  data, train = config.data, config.train
  defaults = base.get_config()
  for path in finetune.PRETRAINING_ONLY:
    section, name = path.split(".")
    if config[section][name] != defaults[section][name]:
      raise errors.UserError(f"{path}={config[section][name]!r} is a pre-training field: "
                             "fine-tuning does not read it")
  if data.max_seq_length < 3:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} leaves no room for a "
                           "token besides [CLS] and [SEP]")
  if train.num_train_epochs <= 0 and train.num_train_steps <= 0:
    raise errors.UserError("train.num_train_epochs and train.num_train_steps are both 0")
  if not 0 <= train.warmup_proportion <= 1:
    raise errors.UserError(f"train.warmup_proportion={train.warmup_proportion} must be between "
                           "0 and 1")
  _check_training(train)
  for field in ("batch_size", "eval_batch_size"):
    _check_batch_size(train, f"train.{field}", mesh)


def _check_batch_size(section: ml_collections.ConfigDict, path: str, mesh: Mesh) -> None:
  """A global batch that splits evenly over the data-parallel devices and the processes."""
  size = section[path.rsplit(".", 1)[1]]
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  if size < 1 or size % data_parallel or size % jax.process_count():
    raise errors.UserError(f"{path}={size} must be a positive multiple of the data-parallel "
                           f"size {data_parallel} and of the process count "
                           f"{jax.process_count()}")


def check_phase2(config: ml_collections.ConfigDict) -> None:
  """The fields of a second sequence-length phase (pretraining/phases.py), when there is one."""
  data, train, model = config.data, config.train, config.model
  start = train.phase2_start_step
  if not start:
    return
  if not 0 < start < train.num_train_steps:
    raise errors.UserError(f"train.phase2_start_step={start} must be between 1 and "
                           f"train.num_train_steps - 1 = {train.num_train_steps - 1} (0 = one "
                           "phase)")
  length, predictions = data.phase2_max_seq_length, data.phase2_max_predictions_per_seq
  if not 8 <= length <= model.max_position_embeddings:
    raise errors.UserError(f"data.phase2_max_seq_length={length} must be between 8 and "
                           f"model.max_position_embeddings={model.max_position_embeddings}")
  if not 1 <= predictions <= length - 3:
    raise errors.UserError(f"data.phase2_max_predictions_per_seq={predictions} must be between 1 "
                           f"and data.phase2_max_seq_length - 3 = {length - 3}")
  if train.phase2_batch_size < 0:
    raise errors.UserError(f"train.phase2_batch_size={train.phase2_batch_size} must be at least "
                           "0 (0 = train.batch_size)")
  # Without data.prepare_seq_length each phase gets instances made at its own length
  # (workdir_data.extra_seq_lengths); with it, both read one data set, cut when read.
  # tfrecord: checked on the records.
  prepared = data.prepare_seq_length
  if data.source != "tfrecord" and prepared and prepared < length:
    raise errors.UserError(
        f"data.phase2_max_seq_length={length} is longer than the instances are prepared "
        f"(data.prepare_seq_length={prepared}): set it to 0, and each phase gets instances "
        f"made at its own length")


def validate_batch_sizes(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  """Global batches must split evenly over hosts and over the data-parallel devices."""
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  fields = ["batch_size", "eval_batch_size"]
  if config.train.phase2_start_step and config.train.phase2_batch_size:
    fields.append("phase2_batch_size")
  for field in fields:
    size = config.train[field]
    if size % data_parallel:
      raise errors.UserError(f"train.{field}={size} is not divisible by the data-parallel size "
                       f"{data_parallel} (mesh.data * mesh.fsdp)")
    if size % jax.process_count():
      raise errors.UserError(f"train.{field}={size} is not divisible by the {jax.process_count()} "
                       "processes")
  accum = config.train.grad_accum_steps
  for field in fields:
    if field != "eval_batch_size" and config.train[field] % (accum * data_parallel):
      raise errors.UserError(
          f"train.{field}={config.train[field]} is not divisible by train.grad_accum_steps="
          f"{accum} times the data-parallel size {data_parallel}: micro-batches must split "
          f"evenly over the devices")
