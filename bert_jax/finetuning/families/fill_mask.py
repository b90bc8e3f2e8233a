"""Pre-training's family, for mode=predict: fill-mask, the top tokens for each [MASK] of a line.

Pre-training itself is its own mode (pretraining/); this record only reads and writes
predictions, so a pre-training workdir or an exported BertForPreTraining predicts like any
fine-tuned model.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import errors
from bert_jax.finetuning import encode
from bert_jax.finetuning.families import record
from bert_jax.model import families
from bert_jax.tokenizers import tokenization

_MASK = "[MASK]"


def _top_tokens(params, batch: dict[str, jax.Array], *, model, top_k: int):
  mlm_logits, _ = model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                              batch["input_mask"], batch["masked_lm_positions"])
  # [batch, masks, top_k] each: the best tokens and their log-probabilities.
  return jax.lax.top_k(jax.nn.log_softmax(mlm_logits.astype(jnp.float32)),
                       min(top_k, mlm_logits.shape[-1]))


def _readable(tokenizer: tokenization.Tokenizer, token_id: int) -> str:
  """A token as text: SentencePiece's word mark dropped ('▁list' -> 'list')."""
  return tokenizer.convert_ids_to_tokens([token_id])[0].removeprefix("\u2581")


def _line_ids(tokenizer, line: str, number: int, path: str) -> list[int]:
  """[CLS] the line's tokens, each [MASK] as the mask token [SEP]."""
  parts = line.split(_MASK)
  if len(parts) == 1:
    raise errors.UserError(f"predict.input_file={path}: line {number} has no {_MASK} (a "
                           "pre-trained model fills in masks)")
  ids = [tokenizer.cls_id]
  for i, part in enumerate(parts):
    if i:
      ids.append(tokenizer.mask_id)
    ids += tokenizer.encode(part) if part.strip() else []
  ids.append(tokenizer.sep_id)
  return ids


def _predict(config, path, tokenizer, head, max_seq_length) -> record.Prepared:
  """[MASK] in a line is the mask token, the text around it is tokenized as usual."""
  del config, head
  lines = encode.read_lines(path, "predict.input_file")
  input_ids = np.full((len(lines), max_seq_length), tokenizer.pad_id, np.int32)
  input_mask = np.zeros_like(input_ids)
  positions = []
  for number, line in enumerate(lines, start=1):
    ids = _line_ids(tokenizer, line, number, path)
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

  return record.Prepared(features, decode, apply=_top_tokens)


FILL_MASK = record.TaskFamily(model=families.get("pretraining"), load=None, score=None,
                              predict=_predict)
