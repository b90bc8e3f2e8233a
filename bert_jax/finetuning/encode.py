"""Sentence embeddings from the BERT encoder: `embed` (pure, jit it with the model bound).

    embed_fn = jax.jit(functools.partial(encode.embed, model=modeling.BertModel(config)))
    embeddings = embed_fn(params["bert"], batch)  # {"cls", "pooled", "mean"}, each [B, H]

Three embeddings of each sequence, all float32 [batch, hidden]:

  cls     the last layer's hidden state of the first token ([CLS]), as the original's
          `get_sequence_output()[:, 0]`.
  pooled  the pooler's output, tanh(dense([CLS])): what the NSP and classification heads read.
          It was trained for next-sentence prediction, so it is a weak similarity feature
          before fine-tuning.
  mean    the average of the last layer's hidden states over the real tokens (input_mask 1),
          the usual sentence embedding (Sentence-BERT's mean pooling). Padding is left out:
          padded positions still get hidden states (they attend to the real tokens), and
          averaging them in would make a sentence's embedding depend on how far it was padded.

No dropout: the model runs deterministically.

`encode_file` is mode='encode': the embeddings of every line of a text file, as a .npz.

    python -m bert_jax.main --config=configs/tiny.py --workdir=WORKDIR --config.mode=encode \
        --config.encode.input_file=sentences.txt
"""

import functools
import io
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from bert_jax import errors
from bert_jax import files
from bert_jax.config import validation
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.data import tasks
from bert_jax.interop import convert
from bert_jax.model import modeling
from bert_jax.runtime import checkpoint
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import rows
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from bert_jax.runtime import workdir_lock
from bert_jax.tokenizers import tokenization


def embed(params, batch: dict[str, jax.Array], *, model: modeling.BertModel
          ) -> dict[str, jax.Array]:
  """The [CLS], pooled and mean embeddings of a batch.

  Args:
    params: The encoder's params (the tree under 'bert' in a pre-training or fine-tuning
      checkpoint), boxed or not.
    batch: `input_ids`, `segment_ids` and `input_mask`, each int32 [batch, length]; packed
      rows (data.packing) also modeling.PACKING_INPUTS.
    model: The encoder, `modeling.BertModel`; its config's dtype is the compute dtype.

  Returns:
    {'cls', 'pooled', 'mean'}: float32 [batch, hidden] each; packed rows: [batch, slots,
    hidden], one per example slot (packing.unpack maps them back to the lines).
  """
  packing = modeling.packing_inputs(batch)
  sequence_output, pooled_output = model.apply(
      {"params": nn.meta.unbox(params)}, batch["input_ids"], batch["segment_ids"],
      batch["input_mask"], deterministic=True, **packing)
  sequence_output = sequence_output.astype(jnp.float32)  # [batch, length, hidden]
  if not packing:
    # [batch, 1 (the row's one example), length]
    members = batch["input_mask"].astype(jnp.float32)[:, None, :]
    cls = sequence_output[:, :1]  # [batch, 1, hidden]
  else:
    slots = jnp.arange(1, batch["cls_positions"].shape[1] + 1)
    # [batch, slots, length]: 1 where the token belongs to the slot's example.
    members = (batch["example_ids"][:, None, :] == slots[None, :, None]).astype(jnp.float32)
    cls = jnp.take_along_axis(sequence_output, batch["cls_positions"][..., None], axis=1)
  # A row with no real token (all padding) gets a zero embedding rather than NaN.
  count = jnp.maximum(jnp.sum(members, axis=2), 1.0)[..., None]  # [batch, slots, 1]
  # [batch, slots, length] x [batch, length, hidden] -> [batch, slots, hidden]
  mean = jnp.einsum("bkl,blh->bkh", members, sequence_output) / count
  embeddings = {"cls": cls, "pooled": pooled_output.astype(jnp.float32), "mean": mean}
  if not packing:  # [batch, hidden] each, as the docstring says.
    embeddings = {"cls": cls[:, 0], "pooled": embeddings["pooled"], "mean": mean[:, 0]}
  return embeddings


def read_lines(path: str, field: str = "encode.input_file") -> list[str]:
  """The lines of a UTF-8 text file, without their line breaks: one output row each.

  Only '\n' ends a line (and a '\r' before it is dropped), so the rows match what `wc -l`
  and editors count; str.splitlines would also split on form feeds and Unicode separators.

  Raises:
    errors.UserError: No such file, not UTF-8 (naming the line), or no line at all; the
      message names `field`, the config field the path came from.
  """
  if not path:
    raise errors.UserError(f"{field} is empty: set --config.{field} to a text file, one "
                           "sequence per line")
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise errors.UserError(f"{field}={path}: no such file")
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise errors.UserError(f"{field}={path}: line {line} is not UTF-8 "
                           f"(byte {e.start} of the file)") from e
  lines = text.removeprefix("\ufeff").split("\n")
  if lines[-1] == "":  # The last line break ends the last line; it starts no other.
    lines.pop()
  if not lines:
    raise errors.UserError(f"{field}={path} is empty: no line to read")
  return [line.removesuffix("\r") for line in lines]


def text_examples(lines: list[str]) -> list[tasks.TextExample]:
  """One example per line: a tab splits it into a pair (A before the first tab, B after)."""
  examples = []
  for number, line in enumerate(lines, start=1):
    text_a, tab, text_b = line.partition("\t")
    examples.append(tasks.TextExample(guid=f"line-{number}", text_a=text_a,
                                      text_b=text_b if tab else None, label=None))
  return examples


def _load_encoder(config: ml_collections.ConfigDict, source: str
                  ) -> tuple[modeling.BertConfig, Any, str]:
  """(architecture, encoder params as host numpy, vocabulary file) of `source`.

  The architecture is the checkpoint's own, with the run's dtype, scan and remat; the
  vocabulary is data.vocab_file, else the one that came with the checkpoint.
  """
  directory = checkpoint.checkpoint_dir(source)
  meta = {}
  if tf.io.gfile.isdir(directory):
    checkpointer = checkpoint.Checkpointer(directory)
    step, meta = checkpointer.latest_meta()
    checkpointer.close()
  # The vocabulary first: a missing one is an error before any array is read.
  if "task" in meta:
    # A fine-tuning workdir: its vocabulary is the one it was fine-tuned with, found from its
    # own saved config; its params are those of its latest step (not of its best eval).
    vocab = config.data.vocab_file or finetune_data.vocab_file(
        ml_collections.ConfigDict(meta["config"]))
    source = os.path.join(directory, str(step))
  else:
    vocab = finetune_data.vocab_file(config, checkpoint=source)
  loaded_config, params = convert.load_params(source)
  # Only the encoder: the heads (pre-training 'cls', or a task's) are not used.
  return loaded_config.with_runtime_of(config.model), params["bert"], vocab


def encode_file(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the [CLS], pooled and mean embeddings of every line of config.encode.input_file.

  The params are the encoder of `workdir`'s latest checkpoint (pre-training or fine-tuning),
  else of config.init_checkpoint (anything convert.load_params reads). Each line is tokenized
  as fine-tuning tokenizes a text or a pair (truncated to data.max_seq_length the same way);
  an empty line is embedded as '[CLS] [SEP]', so row i is always line i + 1.

  Returns:
    The .npz written (config.encode.output_file, else WORKDIR/embeddings.npz): float32
    'cls', 'pooled' and 'mean', each [lines, hidden_size].
  """
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  output_file = files.output_file("encode", config.encode.output_file, config.encode.input_file,
                                  config.encode.overwrite,
                                  os.path.join(workdir, "embeddings.npz"))
  lines = read_lines(config.encode.input_file)
  rules = sharding.logical_axis_rules(config)
  source, _ = resume.params_source(config, workdir)
  # No lock: an eval or an encode may run beside the training run that writes the checkpoints.
  workdir_lock.check_usable(workdir)
  model_config, params, vocab = _load_encoder(config, source)
  tokenizer = tokenization.load_tokenizer(vocab, do_lower_case=config.data.do_lower_case)
  resume.check_fits(model_config, config.data.max_seq_length, tokenizer.vocab_size)
  # The fine-tuning featurizer of a text or a pair; its label_ids are all 0 here, unused.
  features = featurize.encode_text_examples(text_examples(lines), tokenizer,
                                        config.data.max_seq_length)

  # Packed (data.packing): several lines per row, each attending only to itself.
  packed = packing.pack(features, packing.TEXT) if config.data.packing else None
  model = modeling.BertModel(model_config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    shapes = {k: features[k][:1] for k in ("input_ids", "segment_ids", "input_mask")}
    param_shardings = sharding.logical_shardings(jax.eval_shape(
        lambda: train_state.init_params(jax.random.key(0), model, shapes)), mesh, rules)
    params = sharding.place(params, param_shardings, source)
    batch_sharding = sharding.batch_sharding(mesh, rules)
    p_embed = jax.jit(functools.partial(embed, model=model),
                      in_shardings=(param_shardings, batch_sharding))
    embeddings = rows.predict_rows(p_embed, params, packed.features if packed else features,
                                   config.encode.batch_size, batch_sharding)
  if packed:
    embeddings = packing.unpack(embeddings, packed, packing.TEXT)

  if jax.process_index() == 0:
    # Built in memory: a zip needs a seekable file, and a GFile being written is not one.
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in embeddings.items()})
    files.write_whole(output_file, buffer.getvalue())
  report.line(f"Encoded {len(lines)} lines of {config.encode.input_file} into {output_file}: "
              f"'cls', 'pooled' and 'mean', float32 [{len(lines)}, {model_config.hidden_size}] "
              f"each")
  return output_file
