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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from bert_jax import errors
from bert_jax import files
from bert_jax.config import validation
from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import task_eval
from bert_jax.finetuning.data import choices
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import squad
from bert_jax.finetuning.data import squad_postprocess
from bert_jax.finetuning.data import squad_windows
from bert_jax.finetuning.data import task_files
from bert_jax.finetuning.data import tasks
from bert_jax.interop import convert
from bert_jax.interop import export
from bert_jax.interop import hf_heads
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import rows
from bert_jax.runtime import sharding
from bert_jax.runtime import workdir_lock
from bert_jax.tokenizers import tokenization

_TABLES = (".csv", ".tsv", ".jsonl", ".json")
# Inputs -> (model features, outputs -> one JSON object per input).
Prepared = tuple[dict[str, np.ndarray], Callable[[Any], list[dict[str, Any]]]]


def _text_inputs(config: ml_collections.ConfigDict, path: str) -> list[tasks.TextExample]:
  """Texts (or pairs) from a .txt file (a line each, a tab splits a pair) or a table with the
  task's text columns (data.text_a_key, data.text_b_key, or the task's own)."""
  if not path.lower().endswith(_TABLES):
    return encode.text_examples(encode.read_lines(path, "predict.input_file"))
  task = tasks.get_task(config.task) if "task" in config else tasks.get_task("classification")
  keys, _ = tasks.text_keys(task, config.data)
  found = task_files.read_text_columns(path, "predict.input_file", keys)
  return [tasks.TextExample(where, texts[0], texts[1] if len(texts) > 1 else None, None)
          for where, texts, _ in found]


def _text(config, path, tokenizer, head, max_seq_length) -> Prepared:
  examples = _text_inputs(config, path)
  features = featurize.encode_text_examples(examples, tokenizer, max_seq_length, head.family)

  def decode(logits):
    out = []
    for example, row, probabilities in zip(examples, logits, task_eval.softmax(logits)):
      line = {"text": example.text_a, **({"text_b": example.text_b} if example.text_b else {})}
      if head.family == "regression":
        out.append({**line, "score": float(row[0])})
        continue
      names = head.labels
      out.append({**line, "label": names[int(np.argmax(row))],
                  "probabilities": dict(zip(names, map(float, probabilities)))})
    return out

  return features, decode


def _token(config, path, tokenizer, head, max_seq_length) -> Prepared:
  if path.lower().endswith(_TABLES):
    sentences = [words for _, words in task_files.read_word_lists(
        path, "predict.input_file", config.data.text_a_key or "tokens")]
  else:
    sentences = [line.split() for line in encode.read_lines(path, "predict.input_file")]
  examples = [tasks.TokenExample(f"line-{i + 1}", words, None) for i, words in enumerate(sentences)]
  features = featurize.encode_token_examples(examples, tokenizer, max_seq_length)

  def decode(logits):
    predicted = featurize.decode_token_predictions(features, np.argmax(logits, axis=-1))
    return [{"words": e.words, "tags": [head.label_names[i] for i in ids]}
            for e, ids in zip(examples, predicted)]

  return features, decode


def _span(config, path, tokenizer, head, max_seq_length) -> Prepared:
  del head
  data = config.data
  if not path.lower().endswith(".json"):
    raise errors.UserError(f"predict.input_file={path}: a question-answering model reads SQuAD "
                           "JSON (.json)")
  examples = squad.read_squad_json(path, is_training=False)
  windows = squad_windows.convert_examples_to_features(
      examples, tokenizer, max_seq_length, data.get("doc_stride", 128),
      data.get("max_query_length", 64), is_training=False)

  def decode(outputs):
    start_logits, end_logits = outputs
    predictions, nbest, _ = squad_postprocess.postprocess(
        examples, windows, start_logits, end_logits, n_best_size=data.get("n_best_size", 20),
        max_answer_length=data.get("max_answer_length", 30),
        version_2_with_negative=data.get("version_2_with_negative", False),
        null_score_diff_threshold=data.get("null_score_diff_threshold", 0.0),
        # The casing the model was trained with (a WordPiece tokenizer carries it).
        do_lower_case=getattr(tokenizer, "do_lower_case", data.do_lower_case),
        tokenizer=tokenizer)
    return [{"id": e.qas_id, "question": e.question_text, "answer": predictions[e.qas_id],
             "probability": next((n["probability"] for n in nbest[e.qas_id]
                                  if n["text"] == predictions[e.qas_id]), 0.0)}
            for e in examples]

  return windows.arrays(), decode


def _choice(config, path, tokenizer, head, max_seq_length) -> Prepared:
  del head
  examples = choices.read(path, "predict.input_file", "", config.data, labelled=False)
  features = choices.encode(examples, tokenizer, max_seq_length)

  def decode(logits):
    out = []
    for example, probabilities in zip(examples, task_eval.softmax(np.asarray(logits))):
      best = int(np.argmax(probabilities))
      out.append({"context": example.context, "start": example.start, "label": best,
                  "ending": example.endings[best], "probabilities": probabilities.tolist()})
    return out

  return features, decode


def _fill_mask(config, path, tokenizer, head, max_seq_length) -> Prepared:
  """[MASK] in a line is the mask token, the text around it is tokenized as usual."""
  del head
  mask = "[MASK]"
  lines = encode.read_lines(path, "predict.input_file")
  input_ids = np.full((len(lines), max_seq_length), tokenizer.pad_id, np.int32)
  input_mask = np.zeros_like(input_ids)
  positions = []
  for number, line in enumerate(lines, start=1):
    parts = line.split(mask)
    if len(parts) == 1:
      raise errors.UserError(f"predict.input_file={path}: line {number} has no {mask} (a "
                             "pre-trained model fills in masks)")
    ids = [tokenizer.cls_id]
    for i, part in enumerate(parts):
      if i:
        ids.append(tokenizer.mask_id)
      ids += tokenizer.encode(part) if part.strip() else []
    ids.append(tokenizer.sep_id)
    if len(ids) > max_seq_length:
      raise errors.UserError(f"predict.input_file={path}: line {number} is {len(ids)} tokens, "
                             f"more than max_seq_length={max_seq_length}")
    input_ids[number - 1, :len(ids)] = ids
    input_mask[number - 1, :len(ids)] = 1
    positions.append([i for i, token in enumerate(ids) if token == tokenizer.mask_id])
  width = max(map(len, positions))
  # [lines, masks]: a line with fewer masks than the most points its spare ones at [CLS].
  masked_lm_positions = np.array([p + [0] * (width - len(p)) for p in positions], np.int32)
  features = {"input_ids": input_ids, "input_mask": input_mask,
              "segment_ids": np.zeros_like(input_ids), "masked_lm_positions": masked_lm_positions}

  def decode(outputs):
    log_probabilities, ids = (np.asarray(x) for x in outputs)  # [lines, masks, top_k] each
    out = []
    for line, found, scores, tokens in zip(lines, positions, log_probabilities, ids):
      out.append({"text": line, "masks": [
          [{"token": _readable(tokenizer, int(t)), "id": int(t), "probability": float(np.exp(s))}
           for s, t in zip(scores[m], tokens[m])] for m in range(len(found))]})
    return out

  return features, decode


def _readable(tokenizer: tokenization.Tokenizer, token_id: int) -> str:
  """A token as text: SentencePiece's word mark dropped ('▁list' -> 'list')."""
  return tokenizer.convert_ids_to_tokens([token_id])[0].removeprefix("\u2581")


_PREPARE = {"classification": _text, "regression": _text, "token": _token, "span": _span,
            "multiple_choice": _choice, "pretraining": _fill_mask}


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


def _apply(params, batch: dict[str, jax.Array], *, model, head: hf_heads.Head, top_k: int):
  if head.family != "pretraining":
    return finetune_program.predict_step(params, batch, model=model)
  mlm_logits, _ = model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                              batch["input_mask"], batch["masked_lm_positions"])
  # [batch, masks, top_k] each: the best tokens and their log-probabilities.
  return jax.lax.top_k(jax.nn.log_softmax(mlm_logits.astype(jnp.float32)),
                       min(top_k, mlm_logits.shape[-1]))


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
  features, decode = _PREPARE[head.family](config, config.predict.input_file, tokenizer, head,
                                           max_seq_length)
  model = hf_heads.model_for(model_config.with_runtime_of(config.model), head)
  with jax.set_mesh(mesh):
    params = jax.device_put(params, sharding.replicated(mesh))
    batch_sharding = sharding.batch_sharding(mesh, sharding.logical_axis_rules(config))
    p_apply = jax.jit(functools.partial(_apply, model=model, head=head,
                                        top_k=config.predict.top_k))
    outputs = rows.predict_rows(p_apply, params, features, config.predict.batch_size,
                                batch_sharding)
  lines = decode(outputs)
  if jax.process_index() == 0:
    files.write_whole(output_file, "".join(
        json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8"))
  report.line(f"Predicted {len(lines)} inputs of {config.predict.input_file} with "
              f"{head.architecture} from {source}: {output_file}")
  return output_file
