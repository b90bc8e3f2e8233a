"""mode='predict': what a model says about new inputs, one JSON line per input, in input order.

    python -m bert_jax.main --config=configs/finetune.py --workdir=WORKDIR --config.mode=predict \
        --config.predict.input_file=new.csv

The params are WORKDIR's (a fine-tuning workdir's best eval; a pre-training workdir's latest
step), else config.init_checkpoint's: anything convert.load_params reads, such as an exported
or an HF fine-tuned directory. The model's head decides what is read and written:

  classification  .txt (a line per text; a tab splits a pair) or .csv/.tsv/.jsonl with the
                  task's text columns -> {"label", "probabilities": {label: p}}
  regression      the same inputs -> {"score"}
  token (NER)     .txt (a sentence per line, words split on whitespace) or .jsonl with the
                  words column -> {"words", "tags"}: a tag per word
  span (SQuAD)    SQuAD JSON -> {"id", "answer", "probability"} (the original's n-best)
  multiple choice .csv/.tsv/.jsonl with the task's columns (data/choices.py; no label needed)
                  -> {"label": the best ending's index, "ending", "probabilities"}
  pretraining     fill-mask: .txt lines holding [MASK] -> {"masks": [[{"token", "id",
                  "probability"}, ...top_k], ...]}, one list per [MASK]

Inputs are cut as fine-tuning cut them: at the run's data.max_seq_length, which a fine-tuning
workdir records (else config.data.max_seq_length). The vocabulary and its casing are the ones
the model was trained with.
"""

import functools
import json
import os
from typing import Any

import jax
import ml_collections
import tensorflow as tf

from bert_jax import errors
from bert_jax import files
from bert_jax.config import validation
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning.families import registry
from bert_jax.interop import convert
from bert_jax.interop import export
from bert_jax.interop import hf_heads
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import rows
from bert_jax.runtime import sharding
from bert_jax.runtime import workdir_lock
from bert_jax.tokenizers import tokenization


def _max_seq_length(source: str, meta: dict[str, Any], config: ml_collections.ConfigDict
                    ) -> int:
  """The length the model was fine-tuned at: a bert_jax workdir records it, an exported
  directory's tokenizer_config.json keeps it (model_max_length); else data.max_seq_length."""
  if meta.get("max_seq_length"):
    return meta["max_seq_length"]
  tokenizer_config = os.path.join(source, "tokenizer_config.json")
  if tf.io.gfile.exists(tokenizer_config):
    with tf.io.gfile.GFile(tokenizer_config) as f:
      length = json.load(f).get("model_max_length")
    if isinstance(length, int) and 0 < length <= 100_000:  # HF writes 1e30 for "no limit".
      return length
  return config.data.max_seq_length


def _apply(params, batch: dict[str, jax.Array], *, model, top_k: int):
  del top_k  # The model's own outputs (a family's `apply` may take the top tokens).
  return finetune_program.predict_step(params, batch, model=model)


def predict_file(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes one JSON line per input of config.predict.input_file; returns the file written
  (config.predict.output_file, else WORKDIR/predictions.jsonl)."""
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  output_file = files.output_file("predict", config.predict.output_file,
                                  config.predict.input_file, config.predict.overwrite,
                                  os.path.join(workdir, "predictions.jsonl"))
  if not config.predict.input_file:
    raise errors.UserError("predict.input_file is empty: set --config.predict.input_file")
  source, _ = resume.params_source(config, workdir)
  workdir_lock.check_usable(workdir)
  model_config, params, loaded = convert.load_params(source, return_report=True)
  head = loaded.head
  vocab_file, do_lower_case = export.vocabulary(
      source, loaded, config.data.vocab_file or None,
      loaded.meta.get("do_lower_case", config.data.do_lower_case))
  tokenizer = tokenization.load_tokenizer(vocab_file, do_lower_case=do_lower_case)
  max_seq_length = _max_seq_length(source, loaded.meta, config)
  resume.check_fits(model_config, max_seq_length, tokenizer.vocab_size)
  prepared = registry.get(head.family).predict(config, config.predict.input_file, tokenizer,
                                                head, max_seq_length)
  model = hf_heads.model_for(model_config.with_runtime_of(config.model), head)
  with jax.set_mesh(mesh):
    params = jax.device_put(params, sharding.replicated(mesh))
    batch_sharding = sharding.batch_sharding(mesh, sharding.logical_axis_rules(config))
    p_apply = jax.jit(functools.partial(prepared.apply or _apply, model=model,
                                        top_k=config.predict.top_k))
    outputs = rows.predict_rows(p_apply, params, prepared.features, config.predict.batch_size,
                                batch_sharding)
  lines = prepared.decode(outputs)
  if jax.process_index() == 0:
    files.write_whole(output_file, "".join(
        json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8"))
  report.line(f"Predicted {len(lines)} inputs of {config.predict.input_file} with "
              f"{head.architecture} from {source}: {output_file}")
  return output_file
