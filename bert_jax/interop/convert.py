"""Checkpoint interop: HF `transformers` BERT directories, Google's TF checkpoints, Orbax params.

`load_params` reads any of them (and a bert_jax training workdir); it is what
`--config.init_checkpoint` calls. The name and layout map itself is `hf_params.py`; a
fine-tuned model's task head is `hf_heads.py`; `--format=hf` (with the tokenizer) is export.py.

    python -m bert_jax.interop --input=PATH --output=DIR --format=orbax|hf [--bert_config=FILE]

No pickle: `pytorch_model.bin` is read with `torch.load(weights_only=True)`.
"""

import io
import json
import os

from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
import tensorflow as tf

from bert_jax import errors
from bert_jax.interop import config_json
from bert_jax.interop import hf_heads
from bert_jax.interop import hf_params
from bert_jax.model import families
from bert_jax.model import modeling

Params = hf_params.Params
LoadReport = hf_params.LoadReport


def _read_bytes(path: str) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def _read_config(path: str) -> modeling.BertConfig:
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f"{path} does not exist (the model's config.json / bert_config.json)")
  return config_json.read(path)


def _read_hf_tensors(directory: str) -> dict[str, np.ndarray]:
  single = os.path.join(directory, "model.safetensors")
  index = os.path.join(directory, "model.safetensors.index.json")
  torch_file = os.path.join(directory, "pytorch_model.bin")
  if tf.io.gfile.exists(single):
    return _load_safetensors(single)
  if tf.io.gfile.exists(index):  # Sharded: the index names the shard of every tensor.
    try:
      shards = sorted(set(json.loads(_read_bytes(index))["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
      raise errors.UserError(f"{index}: not a safetensors index ({type(e).__name__}: {e})"
                             ) from None
    return {k: v for shard in shards
            for k, v in _load_safetensors(os.path.join(directory, shard)).items()}
  if tf.io.gfile.exists(torch_file):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise errors.UserError(
          f"{torch_file}: reading pytorch_model.bin needs torch (pip install torch), or convert "
          "it to model.safetensors") from None
    # weights_only: tensors and containers only; a pickle cannot run code.
    try:
      state = torch.load(io.BytesIO(_read_bytes(torch_file)), map_location="cpu",
                         weights_only=True)
    # torch raises UnpicklingError, RuntimeError, EOFError ... for a file it will not read.
    except Exception as e:  # pylint: disable=broad-exception-caught
      reason = " ".join(str(e).split())[:200]
      raise errors.UserError(f"{torch_file}: cannot be read as tensors only (a pickle that is "
                             f"not plain weights, or a damaged file): {type(e).__name__}: "
                             f"{reason}") from None
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}
  raise errors.UserError(f"{directory}: has no model.safetensors, model.safetensors.index.json "
                         "or pytorch_model.bin")


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    return safetensors.numpy.load(_read_bytes(path))
  # safetensors raises its own SafetensorError (and others) for a truncated or damaged file.
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise errors.UserError(f"{path}: cannot be read (truncated or not safetensors: "
                           f"{type(e).__name__}: {e})") from None


def load_hf(path: str, return_report: bool = False, seed: int = 0):
  """Loads an HF BERT directory (config.json + model.safetensors or pytorch_model.bin).

  A BertModel checkpoint (no 'bert.' prefix, no heads) loads too: the missing heads are
  initialised as `BertForPreTraining.init` does and listed in the report. A fine-tuned one
  (BertForSequenceClassification, ...TokenClassification, ...QuestionAnswering) loads with its
  head; the report's `head` says which, with config.json's labels.

  Args:
    path: the directory `save_pretrained` wrote (local or gs://).
    return_report: also return a LoadReport.
    seed: PRNG seed for initialising missing heads.

  Returns:
    (BertConfig, params), plus the LoadReport when `return_report`.
  """
  config_path = os.path.join(path, "config.json")
  config = _read_config(config_path)
  tensors = _read_hf_tensors(path)
  head = hf_heads.from_hf_config(config_json.read_values(config_path), tensors, path)
  params, report = hf_params.params_from_hf_tensors(tensors, config, path, seed, head=head)
  return (config, params, report) if return_report else (config, params)


def save_hf(path: str, config: modeling.BertConfig, params: Params,
            head: hf_heads.Head = hf_heads.Head()) -> None:
  """Writes config.json + model.safetensors that `transformers`' `head.architecture` loads."""
  _check_new_directory(path)
  tf.io.gfile.makedirs(path)
  config_json.write(config, os.path.join(path, "config.json"), head)
  tensors = hf_params.hf_tensors_from_params(params, config, head)
  data = safetensors.numpy.save(tensors, metadata={"format": "pt"})
  with tf.io.gfile.GFile(os.path.join(path, "model.safetensors"), "wb") as f:
    f.write(data)


def load_tf_checkpoint(ckpt_prefix: str, bert_config_json: str, return_report: bool = False,
                       seed: int = 0):
  """Loads one of Google's original BERT TF checkpoints (e.g. bert_model.ckpt).

  Adam/LAMB slots ('.../adam_m', '.../adam_v') and global_step are skipped.

  Args:
    ckpt_prefix: the checkpoint prefix (the path without '.index').
    bert_config_json: the original's bert_config.json.
    return_report: also return a LoadReport.
    seed: PRNG seed for initialising missing heads.

  Returns:
    (BertConfig, params), plus the LoadReport when `return_report`.
  """
  config = _read_config(bert_config_json)
  if not tf.io.gfile.exists(ckpt_prefix + ".index"):
    raise errors.UserError(f"{ckpt_prefix}.index does not exist (not a TF checkpoint prefix)")
  reader = tf.train.load_checkpoint(ckpt_prefix)
  tensors, names, ignored = {}, {}, []
  for name in reader.get_variable_to_shape_map():
    if name == "global_step" or name.endswith(("/adam_m", "/adam_v")):
      ignored.append(name)
      continue
    hf_name, transpose = hf_params.hf_name_from_tf(name)
    array = reader.get_tensor(name)
    tensors[hf_name] = array.T if transpose else array  # [in, out] -> torch's [out, in]
    names[hf_name] = name
  params, report = hf_params.params_from_hf_tensors(tensors, config, ckpt_prefix, seed, names)
  report.format, report.ignored = "tf", sorted(ignored)
  return (config, params, report) if return_report else (config, params)


def _local_or_remote(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)  # Orbax wants absolute paths.


def _check_new_directory(path: str) -> None:
  if tf.io.gfile.exists(path) and tf.io.gfile.listdir(path):
    raise errors.UserError(f"{path} already exists and is not empty; nothing was overwritten")


def save_orbax_params(directory: str, config: modeling.BertConfig, params: Params,
                      head: hf_heads.Head = hf_heads.Head()) -> None:
  """Writes `directory/config.json` (with the head's architecture and labels) and
  `directory/params` (an Orbax checkpoint)."""
  _check_new_directory(directory)
  tf.io.gfile.makedirs(directory)
  config_json.write(config, os.path.join(directory, "config.json"), head)
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.device_get(params))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(_local_or_remote(os.path.join(directory, "params")), params)


def restore_numpy(path: str, subtree: str | None = None) -> Params:
  """An Orbax PyTree as host numpy arrays, without a target; only `subtree` if given."""
  checkpointer = ocp.PyTreeCheckpointer()
  path = _local_or_remote(path)
  metadata = checkpointer.metadata(path).item_metadata.tree
  if subtree is not None:
    metadata = {subtree: metadata[subtree]}
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                        metadata)
  item = jax.tree_util.tree_map(lambda m: np.zeros((), m.dtype), metadata)
  restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=subtree is not None))
  return restored[subtree] if subtree is not None else restored


def _check_params(params: Params, config: modeling.BertConfig, source: str,
                  head: hf_heads.Head) -> Params:
  flat = traverse_util.flatten_dict(params, sep="/")
  shapes = hf_params.expected_shapes(config, head)
  if set(flat) != set(shapes):
    missing = hf_params.format_names(set(shapes) - set(flat)) or "none"
    unexpected = hf_params.format_names(set(flat) - set(shapes)) or "none"
    raise errors.UserError(f"{source}: params do not match the config: missing {missing}, "
                           f"unexpected {unexpected}")
  for path, value in flat.items():
    if tuple(value.shape) != shapes[path]:
      raise errors.UserError(f"{source}: {path} has shape {tuple(value.shape)}, but the config "
                             f"says {shapes[path]}")
  return traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in flat.items()},
                                      sep="/")


def _latest_step_dir(path: str) -> str:
  """`path` as a workdir, its checkpoints dir, or one step dir -> the step dir to read."""
  entries = {e.rstrip("/") for e in tf.io.gfile.listdir(path)}
  if "checkpoints" in entries:
    return _latest_step_dir(os.path.join(path, "checkpoints"))
  if {"state", "meta"} <= entries:
    return path
  # Only finalized steps: not a temporary dir of a save in flight, nor (on GCS, where Orbax
  # writes in place) a step without its commit marker.
  steps = ocp.utils.checkpoint_steps(_local_or_remote(path))
  if not steps:
    raise errors.UserError(f"{path}: no complete checkpoint step in it")
  return os.path.join(path, str(max(steps)))


def _workdir_head(meta: dict, groups) -> hf_heads.Head:
  """The head of a workdir's params (their top-level `groups`), from its checkpoint's meta."""
  if "task" not in meta:
    return hf_heads.Head()
  labels = meta.get("label_names")
  family = meta.get("family")
  if family is None:  # Saved before the meta recorded it: what the params and labels show.
    tags = labels and labels[0] == "O" and all(
        name[:2] in ("B-", "I-", "E-", "S-") for name in labels[1:])  # IOB tags: NER.
    family = ("span" if "qa_outputs" in groups else "regression" if not labels else
              "token" if tags else "classification")
  num_labels = (meta.get("num_labels") or families.get(family).num_labels
                or len(labels))
  return hf_heads.Head(family, num_labels, tuple(labels) if labels else None)


def _load_workdir(path: str) -> tuple[modeling.BertConfig, Params, hf_heads.Head, dict]:
  if os.path.basename(path.rstrip("/")) == "state":
    path = os.path.dirname(path.rstrip("/"))
  if tf.io.gfile.isdir(os.path.join(path, "best")):
    path = os.path.join(path, "best")  # A fine-tuning workdir: the params of its best eval.
  step_dir = _latest_step_dir(path)
  meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
      _local_or_remote(os.path.join(step_dir, "meta")))
  config = modeling.BertConfig.from_dict(dict(meta["model"]))
  params = restore_numpy(os.path.join(step_dir, "state"), subtree="params")
  head = _workdir_head(meta, params)
  return config, _check_params(params, config, step_dir, head), head, dict(meta)


def load_params(path: str, bert_config_json: str | None = None, return_report: bool = False):
  """Loads params from any supported checkpoint; what `--config.init_checkpoint` reads.

  Args:
    path: one of: a directory written by `save_orbax_params`; an HF directory (config.json +
      model.safetensors or pytorch_model.bin); a TF checkpoint prefix (`prefix.index` exists) or
      a directory holding one; a bert_jax workdir, its checkpoints dir or one step dir (the
      train state's params are restored, nothing else; a fine-tuning workdir's best params,
      from WORKDIR/best).
    bert_config_json: the config of a TF checkpoint; default: bert_config.json next to it.
    return_report: also return a LoadReport.

  Returns:
    (BertConfig, params as nested dicts of float32 numpy arrays), plus the LoadReport when
    `return_report`.
  """
  path = path.rstrip("/") or path
  report = hf_params.LoadReport(source=path, format="")
  entries = set()
  if tf.io.gfile.isdir(path):
    entries = {e.rstrip("/") for e in tf.io.gfile.listdir(path)}
  indexes = sorted(e for e in entries if e.endswith(".index"))
  if len(indexes) == 1 and "config.json" not in entries:
    # A directory holding one TF checkpoint, as Google's downloads are.
    path = os.path.join(path, indexes[0][:-len(".index")])
  if tf.io.gfile.exists(path + ".index"):
    config_file = bert_config_json or os.path.join(os.path.dirname(path), "bert_config.json")
    config, params, report = load_tf_checkpoint(path, config_file, return_report=True)
  elif {"config.json", "params"} <= entries:
    config = _read_config(os.path.join(path, "config.json"))
    params = restore_numpy(os.path.join(path, "params"))
    report.head = hf_heads.from_hf_config(
        config_json.read_values(os.path.join(path, "config.json")),
        [f"{group}.weight" for group in params], path)
    params = _check_params(params, config, path, report.head)
    report.format = "orbax"
  elif "config.json" in entries:
    config, params, report = load_hf(path, return_report=True)
  elif entries & {"checkpoints", "state"} or any(e.isdigit() for e in entries) or (
      os.path.basename(path) == "state" and tf.io.gfile.isdir(path)):
    config, params, report.head, report.meta = _load_workdir(path)
    report.format = "workdir"
  elif tf.io.gfile.exists(path):
    raise errors.UserError(
        f"{path} is not a checkpoint: expected an HF directory (config.json + model.safetensors), "
        "an Orbax params directory, a TF checkpoint prefix or a bert_jax workdir")
  else:
    raise errors.UserError(f"{path} does not exist (neither it nor {path}.index)")
  return (config, params, report) if return_report else (config, params)
