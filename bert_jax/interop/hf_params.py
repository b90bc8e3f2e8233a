"""The one map between bert_jax params and HF `transformers` BERT's state dict (pure numpy).

Every import goes through `_LEAVES`, which names each of our params' HF tensor and layout; a TF
checkpoint is first renamed to HF names (`hf_name_from_tf`), so all imports share the same shape
checks, missing-head initialisation and unexpected-name errors. File I/O is in `convert.py`.
A fine-tuned model's task head ('classifier', 'qa_outputs'; hf_heads.py) maps the same way.
"""

import dataclasses
import re
from typing import Any

from absl import logging
from flax import traverse_util
import flax.linen as nn
import jax
import numpy as np

from bert_jax import errors
from bert_jax.interop import hf_heads
from bert_jax.model import modeling

Params = dict[str, Any]

# (our param path, HF name, layout). Encoder names hold '{layer}': one HF tensor per layer,
# stacked on our leading scan axis. Layouts, HF (torch) side first:
#   copy        same array.
#   linear      torch Linear weight [out, in]  <->  our kernel [in, out].
#   heads_in    [heads * head_dim, embed]      <->  [embed, heads, head_dim]   (query/key/value)
#   heads_bias  [heads * head_dim]             <->  [heads, head_dim]
#   heads_out   [embed, heads * head_dim]      <->  [heads, head_dim, embed]   (attention output)
_LAYER_PREFIX = "bert.encoder.layer.{layer}."
_LEAVES = (
    ("bert/embeddings/word_embeddings/embedding", "bert.embeddings.word_embeddings.weight", "copy"),
    ("bert/embeddings/position_embeddings/embedding", "bert.embeddings.position_embeddings.weight",
     "copy"),
    ("bert/embeddings/token_type_embeddings/embedding",
     "bert.embeddings.token_type_embeddings.weight", "copy"),
    ("bert/embeddings/LayerNorm/scale", "bert.embeddings.LayerNorm.weight", "copy"),
    ("bert/embeddings/LayerNorm/bias", "bert.embeddings.LayerNorm.bias", "copy"),
    *((f"bert/encoder/layer/attention/{name}_kernel",
       f"{_LAYER_PREFIX}attention.self.{name}.weight", "heads_in") for name in ("query", "key",
                                                                               "value")),
    *((f"bert/encoder/layer/attention/{name}_bias", f"{_LAYER_PREFIX}attention.self.{name}.bias",
       "heads_bias") for name in ("query", "key", "value")),
    ("bert/encoder/layer/attention/output_kernel", f"{_LAYER_PREFIX}attention.output.dense.weight",
     "heads_out"),
    ("bert/encoder/layer/attention/output_bias", f"{_LAYER_PREFIX}attention.output.dense.bias",
     "copy"),
    ("bert/encoder/layer/attention/LayerNorm/scale",
     f"{_LAYER_PREFIX}attention.output.LayerNorm.weight", "copy"),
    ("bert/encoder/layer/attention/LayerNorm/bias",
     f"{_LAYER_PREFIX}attention.output.LayerNorm.bias", "copy"),
    ("bert/encoder/layer/intermediate/kernel", f"{_LAYER_PREFIX}intermediate.dense.weight",
     "linear"),
    ("bert/encoder/layer/intermediate/bias", f"{_LAYER_PREFIX}intermediate.dense.bias", "copy"),
    ("bert/encoder/layer/output/kernel", f"{_LAYER_PREFIX}output.dense.weight", "linear"),
    ("bert/encoder/layer/output/bias", f"{_LAYER_PREFIX}output.dense.bias", "copy"),
    ("bert/encoder/layer/LayerNorm/scale", f"{_LAYER_PREFIX}output.LayerNorm.weight", "copy"),
    ("bert/encoder/layer/LayerNorm/bias", f"{_LAYER_PREFIX}output.LayerNorm.bias", "copy"),
    ("bert/pooler/kernel", "bert.pooler.dense.weight", "linear"),
    ("bert/pooler/bias", "bert.pooler.dense.bias", "copy"),
    ("cls/predictions/transform_dense/kernel", "cls.predictions.transform.dense.weight", "linear"),
    ("cls/predictions/transform_dense/bias", "cls.predictions.transform.dense.bias", "copy"),
    ("cls/predictions/transform_LayerNorm/scale", "cls.predictions.transform.LayerNorm.weight",
     "copy"),
    ("cls/predictions/transform_LayerNorm/bias", "cls.predictions.transform.LayerNorm.bias",
     "copy"),
    ("cls/predictions/output_bias", "cls.predictions.bias", "copy"),
    ("cls/seq_relationship/kernel", "cls.seq_relationship.weight", "linear"),
    ("cls/seq_relationship/bias", "cls.seq_relationship.bias", "copy"),
)
# A checkpoint may lack these whole (a BertModel has no cls heads, some have no pooler); they are
# then initialised as our model would and reported. Anything else missing is an error.
_HEADS = ("bert/pooler", "cls/predictions", "cls/seq_relationship")
Head = hf_heads.Head


def _leaves(head: Head) -> tuple[tuple[str, str, str], ...]:
  """`_LEAVES` of the model with `head`: the encoder, then its head (pre-training's 'cls', or a
  task head's one dense layer)."""
  group = head.param_group
  encoder = tuple(leaf for leaf in _LEAVES if leaf[0].startswith("bert/"))
  head_leaves = tuple(leaf for leaf in _LEAVES if leaf[0].startswith(f"{group}/"))
  return encoder + (head_leaves or ((f"{group}/kernel", f"{group}.weight", "linear"),
                    (f"{group}/bias", f"{group}.bias", "copy")))
# HF's tied copies: the decoder is the word embeddings, its bias is cls.predictions.bias.
_TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
         "cls.predictions.decoder.bias": "cls.predictions.bias"}
_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")


@dataclasses.dataclass
class LoadReport:
  """What a load did besides copying weights.

  Attributes:
    source: the path that was read.
    format: 'hf', 'tf', 'orbax' or 'workdir'.
    initialized: our param paths ('cls/seq_relationship/kernel', ...) that the checkpoint lacked
      and that were initialised as `BertForPreTraining.init` does.
    ignored: checkpoint names skipped on purpose (optimizer slots, buffers, tied copies).
    head: the model's head: pre-training, or a fine-tuned model's task head and labels.
    meta: a workdir's checkpoint meta (its run's config, task, ...); empty for other formats.
  """
  source: str
  format: str
  initialized: list[str] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  head: hf_heads.Head = hf_heads.Head()
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def _hf_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The HF shape of one layer's tensor whose bert_jax shape is `shape`."""
  if layout == "linear":
    return shape[::-1]
  if layout == "heads_in":
    return (shape[1] * shape[2], shape[0])
  if layout == "heads_bias":
    return (shape[0] * shape[1],)
  if layout == "heads_out":
    return (shape[2], shape[0] * shape[1])
  return shape


def _from_hf_layout(array: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
  """One layer's HF tensor -> our layout of `shape` (already checked against `_hf_shape`)."""
  if layout in ("linear", "heads_in", "heads_out"):
    # [out, in] -> [in, out], then split the heads axis: [embed, heads, head_dim] for heads_in,
    # [heads, head_dim, embed] for heads_out.
    return np.ascontiguousarray(array.T.reshape(shape))
  return array.reshape(shape)  # heads_bias: [heads * head_dim] -> [heads, head_dim].


def _to_hf_layout(array: np.ndarray, layout: str) -> np.ndarray:
  """One layer of our param -> its HF tensor (the inverse of `_from_hf_layout`)."""
  if layout == "heads_in":
    array = array.reshape(array.shape[0], -1)  # [embed, heads * head_dim]
  elif layout == "heads_out":
    array = array.reshape(-1, array.shape[-1])  # [heads * head_dim, embed]
  elif layout == "heads_bias":
    array = array.reshape(-1)  # [heads * head_dim]
  if layout in ("linear", "heads_in", "heads_out"):
    array = array.T  # [in, out] -> torch's [out, in]
  return np.ascontiguousarray(array, dtype=np.float32)


def _init(config: modeling.BertConfig, head: Head, rng: jax.Array) -> Params:
  inputs = hf_heads.dummy_inputs(head)
  return nn.meta.unbox(hf_heads.model_for(config, head).init(rng, *inputs)["params"])


def expected_shapes(config: modeling.BertConfig, head: Head = Head()
                    ) -> dict[str, tuple[int, ...]]:
  abstract = jax.eval_shape(lambda: _init(config, head, jax.random.key(0)))
  return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(abstract, sep="/").items()}


def _initial_params(config: modeling.BertConfig, paths: list[str], seed: int, head: Head
                    ) -> dict[str, Any]:
  """Our model's own init of `paths` only (jit drops the work for every other param)."""

  def init(rng):
    params = _init(config, head, rng)
    flat = traverse_util.flatten_dict(params, sep="/")
    return {path: flat[path] for path in paths}

  return {k: np.asarray(v, np.float32) for k, v in jax.jit(init)(jax.random.key(seed)).items()}


def _head_of(path: str) -> str | None:
  return next((head for head in _HEADS if path.startswith(head + "/")), None)


def format_names(names) -> str:
  names = sorted(names)
  return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def params_from_hf_tensors(tensors: dict[str, np.ndarray], config: modeling.BertConfig,
                           source: str, seed: int = 0, names: dict[str, str] | None = None,
                           head: Head = Head()) -> tuple[Params, LoadReport]:
  """Our params from a flat dict of HF-named tensors (a state dict).

  Args:
    tensors: HF names -> arrays, with or without the 'bert.' prefix; LayerNorm 'gamma'/'beta'
      (old HF checkpoints) are read as 'weight'/'bias'.
    config: the model the tensors belong to; every shape is checked against it.
    source: the file or directory, named in errors and in the report.
    seed: PRNG seed for initialising missing heads.
    names: for errors, the checkpoint's own name of each HF name (TF variable names).
    head: the model's head (hf_heads.from_hf_config); a fine-tuned model's head tensors
      ('classifier.*', 'qa_outputs.*') are then read, and no pre-training head is expected.

  Returns:
    (params as a nested dict of float32 numpy arrays, LoadReport with format 'hf').
  """
  report = LoadReport(source=source, format="hf", head=head)
  tensors = {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v
             for k, v in tensors.items()}
  if not any(k.startswith("bert.") for k in tensors):  # A BertModel: no 'bert.' prefix.
    tops = ("cls.", "classifier.", "qa_outputs.")
    tensors = {k if k.startswith(tops) else "bert." + k: v for k, v in tensors.items()}
  if "cls.predictions.bias" not in tensors and "cls.predictions.decoder.bias" in tensors:
    tensors["cls.predictions.bias"] = tensors["cls.predictions.decoder.bias"]
  names = names or {}
  shapes = expected_shapes(config, head)
  layers = range(config.num_hidden_layers)
  flat, missing, used = {}, {}, set()
  for path, hf_name, layout in _leaves(head):
    per_layer = "{layer}" in hf_name
    hf_names = [hf_name.format(layer=i) for i in layers] if per_layer else [hf_name]
    shape = shapes[path][1:] if per_layer else shapes[path]
    absent = [n for n in hf_names if n not in tensors]
    if absent:
      missing[path] = absent
      continue
    arrays = []
    for name in hf_names:
      array = tensors[name]
      if tuple(array.shape) != _hf_shape(layout, shape):
        raise errors.UserError(
            f"{source}: {names.get(name, name)} has shape {tuple(array.shape)}, but the config "
            f"says {_hf_shape(layout, shape)} (is it the config.json of this checkpoint?)")
      arrays.append(_from_hf_layout(np.asarray(array, np.float32), layout, shape))
    flat[path] = np.stack(arrays) if per_layer else arrays[0]  # [layers, ...] for the encoder
    used.update(hf_names)

  # A head is initialised only when it is absent whole; a head or encoder param missing on its
  # own means a truncated or foreign checkpoint.
  partial = {p for p in missing if _head_of(p) is None or any(
      _head_of(q) == _head_of(p) for q in flat)}
  if partial:
    absent = [names.get(n, n) for p in partial for n in missing[p]]
    raise errors.UserError(f"{source}: missing {format_names(absent)}")
  if missing:
    report.initialized = sorted(missing)
    flat.update(_initial_params(config, report.initialized, seed, head))
    logging.warning("%s has no %s: initialised them", source, ", ".join(
        sorted({_head_of(p) for p in missing})))

  for tied, original in _TIED.items():
    if tied in tensors:
      if original in tensors and not np.array_equal(np.asarray(tensors[tied], np.float32),
                                                    np.asarray(tensors[original], np.float32)):
        raise errors.UserError(f"{source}: {tied} differs from {original}; an untied MLM "
                               "decoder is not supported (bert_jax ties it to the embeddings)")
      report.ignored.append(tied)
  report.ignored += [k for k in _BUFFERS if k in tensors]
  unexpected = set(tensors) - used - set(report.ignored)
  if unexpected:
    unexpected = format_names(names.get(n, n) for n in unexpected)
    raise errors.UserError(f"{source}: unexpected {unexpected}")
  return traverse_util.unflatten_dict(flat, sep="/"), report


def hf_tensors_from_params(params: Params, config: modeling.BertConfig, head: Head = Head()
                           ) -> dict[str, np.ndarray]:
  """The state dict (float32, contiguous) of `head.architecture` from our params.

  The tied decoder keys are left out, as HF's own `save_pretrained` does with safetensors;
  `from_pretrained` re-ties them and reports nothing missing. The pooler is left out of the
  architectures HF builds without one (token classification, question answering).
  """
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  tensors = {}
  for path, hf_name, layout in _leaves(head):
    if not head.record.hf.pooler and path.startswith("bert/pooler/"):
      continue
    value = np.asarray(flat[path], np.float32)
    if "{layer}" in hf_name:
      for layer in range(config.num_hidden_layers):
        tensors[hf_name.format(layer=layer)] = _to_hf_layout(value[layer], layout)
    else:
      tensors[hf_name] = _to_hf_layout(value, layout)
  return tensors


def hf_name_from_tf(name: str) -> tuple[str, bool]:
  """A TF variable name of the original BERT -> (HF name, whether the TF array is [in, out])."""
  special = {"cls/predictions/output_bias": "cls.predictions.bias",
             # The original stores the NSP weights as [2, hidden]: already torch's [out, in].
             "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
             "cls/seq_relationship/output_bias": "cls.seq_relationship.bias"}
  if name in special:
    return special[name], False
  parts = []
  for part in name.split("/"):
    layer = re.fullmatch(r"layer_(\d+)", part)
    parts += ["layer", layer.group(1)] if layer else [
        {"gamma": "weight", "beta": "bias", "kernel": "weight"}.get(part, part)]
  if parts[-1].endswith("_embeddings"):
    parts.append("weight")
  return ".".join(parts), name.endswith("/kernel")
