"""Task families, the model's side: one record per family, and the only place that knows them.

A family is what sits on top of the encoder and what it is trained against: the head module,
its loss, its FLOPs, a batch of the right shapes, and the Hugging Face architecture it exports
as. The data side of a fine-tuning family (featurize, pack, score, predict) is its record in
finetuning/families.py; the two share the family's name. No TensorFlow here: interop/ (export,
loading any checkpoint) and the accelerator check read these records where only JAX exists.

  pretraining      BertForPreTraining              'cls' (MLM + NSP)
  classification   BertForSequenceClassification   'classifier' [hidden, labels], single label
  regression       BertForSequenceClassification   'classifier' [hidden, 1], problem_type regression
  token            BertForTokenClassification      'classifier' on every token (no pooler in HF)
  span             BertForQuestionAnswering        'qa_outputs' (start, end) (no pooler in HF)
  multiple_choice  BertForMultipleChoice           'classifier' [hidden, 1]: a score per choice

A new family is a module that builds a `Family` and one `register` call.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import errors
from bert_jax.model import heads
from bert_jax.model import modeling

# Choices of the batches built for init and ahead-of-time compilation (SWAG's and HellaSwag's).
NUM_CHOICES = 4


@dataclasses.dataclass(frozen=True)
class HuggingFace:
  """What a family is to `transformers`.

  Attributes:
    architecture: The transformers class ('BertForSequenceClassification').
    problem_type: config.json's problem_type, where the architecture needs one to tell families
      apart (classification from regression).
    labels: Whether config.json carries id2label / label2id.
    pooler: Whether transformers builds this architecture's BertModel with its pooler.
    pipeline: The transformers.pipeline task that runs it ('' = none: `usage` shows how).
    example: The pipeline's example input, a Python literal.
    truncate: Whether the pipeline is called with truncation=True (inputs cut as bert_jax cuts).
    usage: README lines (indented 4) that run the model where there is no pipeline.
  """
  architecture: str
  problem_type: str | None = None
  labels: bool = False
  pooler: bool = True
  pipeline: str = ""
  example: str = ""
  truncate: bool = False
  usage: str = ""


@dataclasses.dataclass(frozen=True)
class Family:
  """A task family's model side.

  Attributes:
    name: The family's name: what checkpoints record and the data side is keyed by.
    build: (architecture, num_labels) -> the flax model: the encoder under 'bert', the head
      under `param_group`.
    loss: (the model's outputs, the batch) -> the mean loss, `batch['weights']` weighing
      examples (1 real, 0 padding) when present. None for pre-training (model/losses.py).
    head_flops: (architecture, sequences, seq_length, num_labels) -> forward FLOPs of the head
      past the encoder and pooler (flops.finetuning_flops_per_step).
    dummy_batch: (batch_size, seq_length, num_labels) -> a training batch of the right shapes
      and dtypes (host numpy): for init and for compiling without data.
    param_group: The head's top-level param group; its HF tensors are '<group>.weight/bias'.
    num_labels: The head's outputs when the family fixes them (span: 2); 0 = the task's labels.
    hf: The transformers side; None = this family does not export to transformers.
    pretraining: The MLM + NSP heads pre-training trains (continued pre-training needs them).
  """
  name: str
  build: Callable[[modeling.BertConfig, int], nn.Module]
  loss: Callable[[Any, dict[str, jax.Array]], jax.Array] | None
  head_flops: Callable[[modeling.BertConfig, int, int, int], int]
  dummy_batch: Callable[[int, int, int], dict[str, np.ndarray]]
  param_group: str
  num_labels: int = 0
  hf: HuggingFace | None = None
  pretraining: bool = False


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Adds `family` to the registry (a name is registered once)."""
  if family.name in FAMILIES:
    raise ValueError(f"task family {family.name!r} is already registered")
  FAMILIES[family.name] = family
  return family


def get(name: str) -> Family:
  if name not in FAMILIES:
    raise errors.UserError(f"unknown task family {name!r}: known ones are {', '.join(FAMILIES)}")
  return FAMILIES[name]


def model_inputs(batch: dict[str, Any]) -> tuple[Any, ...]:
  """The model's positional inputs; fine-tuning batches have no masked positions."""
  inputs = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])
  if "masked_lm_positions" in batch:
    inputs += (batch["masked_lm_positions"],)
  return inputs


# ---- The built-in families ----


def _weights(batch: dict[str, jax.Array]) -> jax.Array:
  return batch.get("weights", jnp.ones(batch["input_ids"].shape[:1], jnp.float32))


def _tokens(*shape: int) -> dict[str, np.ndarray]:
  tokens = np.zeros(shape, np.int32)
  return {"input_ids": tokens, "input_mask": tokens, "segment_ids": tokens,
          "weights": np.ones(shape[:1], np.float32)}


def _pooled_head_flops(config, sequences, seq_length, num_labels):
  del seq_length  # The head reads one pooled vector per sequence.
  return 2 * sequences * config.hidden_size * num_labels


def _token_head_flops(config, sequences, seq_length, num_labels):
  return 2 * sequences * seq_length * config.hidden_size * num_labels


def _pretraining_batch(batch_size, seq_length, num_labels):
  del num_labels
  batch = _tokens(batch_size, seq_length)
  # One masked position: enough for init (pretraining/train_program.py builds the real one).
  batch["masked_lm_positions"] = np.zeros((batch_size, 1), np.int32)
  return batch


_SPAN_USE = """\
    import torch

    question, context = "Where did she work?", "Ada Lovelace worked in London."
    encoded = tokenizer(question, context, truncation="only_second", return_tensors="pt",
                        return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0]  # [length, 2]: each token's characters
    with torch.no_grad():
        output = model(**encoded)
    in_context = (encoded["token_type_ids"][0] == 1) & (offsets[:, 1] > 0)  # [length]
    position = torch.arange(len(offsets))
    span_length = position[None, :] - position[:, None] + 1  # [start, end]
    allowed = in_context[:, None] & in_context[None, :] & (span_length >= 1) & (span_length <= 30)
    scores = output.start_logits[0][:, None] + output.end_logits[0][None, :]  # [start, end]
    start, end = divmod(int(scores.masked_fill(~allowed, -float("inf")).argmax()), len(offsets))
    print(context[offsets[start][0]:offsets[end][1]])
"""
# A span head's answer as bert_jax's n-best takes it (above): the best start + end logit over
# the context's own tokens, end not before start, at most 30 tokens (data.max_answer_length).
# transformers 5 removed the question-answering pipeline, and multiple choice never had one.
_CHOICE_USE = """\
    encoded = tokenizer(["a context"] * 2, ["one ending", "another ending"],
                        truncation=True, padding=True, return_tensors="pt")
    scores = model(**{k: v[None] for k, v in encoded.items()}).logits  # [1, choices]
"""


register(Family(
    name="pretraining",
    build=lambda config, num_labels: modeling.BertForPreTraining(config),
    loss=None, head_flops=lambda config, sequences, seq_length, num_labels: 0,
    dummy_batch=_pretraining_batch, param_group="cls", pretraining=True,
    hf=HuggingFace("BertForPreTraining", pipeline="fill-mask",
                   example='"Paris is the [MASK] of France."')))

register(Family(
    name="classification",
    build=heads.BertForSequenceClassification,
    # Packed rows: logits [rows, slots, labels] with labels and weights [rows, slots].
    loss=lambda logits, batch: heads.classification_loss(logits, batch["label_ids"],
                                                         _weights(batch)),
    head_flops=_pooled_head_flops,
    dummy_batch=lambda batch_size, seq_length, num_labels: {
        **_tokens(batch_size, seq_length), "label_ids": np.zeros(batch_size, np.int32)},
    param_group="classifier",
    hf=HuggingFace("BertForSequenceClassification", "single_label_classification", labels=True,
                   pipeline="text-classification", example='"a sentence to classify"',
                   truncate=True)))

register(Family(
    name="regression",
    build=lambda config, num_labels: heads.BertForSequenceClassification(config, 1),
    loss=lambda logits, batch: heads.regression_loss(logits, batch["label_ids"], _weights(batch)),
    head_flops=_pooled_head_flops,
    dummy_batch=lambda batch_size, seq_length, num_labels: {
        **_tokens(batch_size, seq_length), "label_ids": np.zeros(batch_size, np.float32)},
    param_group="classifier", num_labels=1,
    hf=HuggingFace("BertForSequenceClassification", "regression", labels=True,
                   pipeline="text-classification", example='"a sentence to score"',
                   truncate=True)))

register(Family(
    name="token",
    build=heads.BertForTokenClassification,
    loss=lambda logits, batch: heads.token_loss(
        logits, batch["label_ids"], batch["label_weights"] * _weights(batch)[:, None]),
    head_flops=_token_head_flops,
    dummy_batch=lambda batch_size, seq_length, num_labels: {
        **_tokens(batch_size, seq_length),
        "label_ids": np.zeros((batch_size, seq_length), np.int32),
        "label_weights": np.zeros((batch_size, seq_length), np.float32)},
    param_group="classifier",
    hf=HuggingFace("BertForTokenClassification", labels=True, pooler=False,
                   pipeline="token-classification",
                   example='"Ada Lovelace worked in London."')))

register(Family(
    name="span",
    build=lambda config, num_labels: heads.BertForQuestionAnswering(config),
    # Packed rows: each window's softmax over its own tokens (its example id's).
    loss=lambda outputs, batch: heads.span_loss(
        *outputs, batch["start_positions"], batch["end_positions"], _weights(batch),
        batch.get("example_ids", batch["input_mask"])),
    head_flops=lambda config, sequences, seq_length, num_labels: _token_head_flops(
        config, sequences, seq_length, 2),
    dummy_batch=lambda batch_size, seq_length, num_labels: {
        **_tokens(batch_size, seq_length),
        "start_positions": np.zeros(batch_size, np.int32),
        "end_positions": np.zeros(batch_size, np.int32)},
    param_group="qa_outputs", num_labels=2,
    hf=HuggingFace("BertForQuestionAnswering", pooler=False, usage=_SPAN_USE)))

register(Family(
    name="multiple_choice",
    build=lambda config, num_labels: heads.BertForMultipleChoice(config),
    # Logits [batch, choices]: the choices' scores, as a classifier's over its labels.
    loss=lambda logits, batch: heads.classification_loss(logits, batch["label_ids"],
                                                         _weights(batch)),
    # Sequences here count every (context, ending) pair; one score each.
    head_flops=lambda config, sequences, seq_length, num_labels: _pooled_head_flops(
        config, sequences, seq_length, 1),
    dummy_batch=lambda batch_size, seq_length, num_labels: {
        **_tokens(batch_size, NUM_CHOICES, seq_length),  # [batch, choices, length]
        "label_ids": np.zeros(batch_size, np.int32)},
    param_group="classifier", num_labels=1,
    hf=HuggingFace("BertForMultipleChoice", usage=_CHOICE_USE)))
