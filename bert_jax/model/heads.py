"""Fine-tuning heads on the BERT encoder, and their losses (pure functions).

Each model keeps the encoder under 'bert', as BertForPreTraining does, so the params of a
pre-training checkpoint load into it unchanged; the pre-training heads ('cls') are dropped and
the task head is initialised as the original does (truncated normal, zero bias).

- BertForSequenceClassification: [CLS] -> pooler -> dropout -> 'classifier'; GLUE
  classification, and regression (STS-B) with one output.
- BertForQuestionAnswering: every token -> 'qa_outputs' (start, end); SQuAD.
- BertForTokenClassification: every token -> dropout -> 'classifier'; NER.
- BertForMultipleChoice: each (context, ending) pair's [CLS] -> pooler -> dropout ->
  'classifier' (one score), softmax over the choices; SWAG.

Each but multiple choice takes packed rows too (`**packing`: modeling.PACKING_INPUTS,
finetuning/data/packing.py).

`reinit_top_layers` gives a head's encoder a fresh top (train.reinit_top_layers).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import errors
from bert_jax.model import modeling


def _output_layer(config: modeling.BertConfig, features: int, name: str) -> modeling.Dense:
  # Logits in float32 whatever the compute dtype: they feed a softmax or a regression loss.
  return modeling.Dense(features, dtype=jnp.float32, name=name,
                        kernel_init=modeling.weight_init(config, ("embed", None)),
                        bias_init=modeling.zeros_init((None,)))


class BertForSequenceClassification(nn.Module):
  """`logits [batch, num_labels]` from the pooled [CLS] output (num_labels=1: regression);
  [batch, slots, num_labels] for packed rows, one per example's [CLS]."""
  config: modeling.BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, input_mask: jax.Array,
               deterministic: bool = True, **packing: jax.Array) -> jax.Array:
    _, pooled_output = modeling.BertModel(self.config, name="bert")(
        input_ids, segment_ids, input_mask, deterministic, **packing)
    pooled_output = nn.Dropout(self.config.hidden_dropout_prob)(
        pooled_output, deterministic=deterministic)
    return _output_layer(self.config, self.num_labels, "classifier")(pooled_output)


class BertForQuestionAnswering(nn.Module):
  """`(start_logits, end_logits)`, each [batch, length]: where the answer span begins and ends."""
  config: modeling.BertConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, input_mask: jax.Array,
               deterministic: bool = True, **packing: jax.Array) -> tuple[jax.Array, jax.Array]:
    sequence_output, _ = modeling.BertModel(self.config, name="bert")(
        input_ids, segment_ids, input_mask, deterministic, **packing)
    logits = _output_layer(self.config, 2, "qa_outputs")(sequence_output)  # [batch, length, 2]
    return logits[..., 0], logits[..., 1]


class BertForTokenClassification(nn.Module):
  """`logits [batch, length, num_labels]`: a label for every token (NER)."""
  config: modeling.BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, input_mask: jax.Array,
               deterministic: bool = True, **packing: jax.Array) -> jax.Array:
    sequence_output, _ = modeling.BertModel(self.config, name="bert")(
        input_ids, segment_ids, input_mask, deterministic, **packing)
    sequence_output = nn.Dropout(self.config.hidden_dropout_prob)(
        sequence_output, deterministic=deterministic)
    return _output_layer(self.config, self.num_labels, "classifier")(sequence_output)


class BertForMultipleChoice(nn.Module):
  """`logits [batch, choices]`: one score per (context, ending) pair from its pooled [CLS], the
  choices then compared by a softmax (SWAG). Inputs are [batch, choices, length]."""
  config: modeling.BertConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, input_mask: jax.Array,
               deterministic: bool = True) -> jax.Array:
    batch, choices, length = input_ids.shape
    # [batch, choices, length] -> [batch * choices, length]: every pair is its own sequence.
    flat = [x.reshape(batch * choices, length) for x in (input_ids, segment_ids, input_mask)]
    _, pooled_output = modeling.BertModel(self.config, name="bert")(*flat, deterministic)
    pooled_output = nn.Dropout(self.config.hidden_dropout_prob)(
        pooled_output, deterministic=deterministic)
    logits = _output_layer(self.config, 1, "classifier")(pooled_output)  # [batch * choices, 1]
    return logits.reshape(batch, choices)


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-5)


def classification_loss(logits: jax.Array, label_ids: jax.Array,
                        weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the real examples (weight 1; padding rows of a batch weigh 0).

  logits [batch, num_labels], label_ids [batch] int, weights [batch]; packed rows: [batch,
  slots, ...] each (an empty slot weighs 0).
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, label_ids)
  return _weighted_mean(losses, weights)


def regression_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean squared error of the single output (STS-B). logits [batch, 1], labels [batch]
  (packed rows: [batch, slots, 1] and [batch, slots])."""
  return _weighted_mean(jnp.square(logits[..., 0] - labels), weights)


def span_loss(start_logits: jax.Array, end_logits: jax.Array, start_positions: jax.Array,
              end_positions: jax.Array, weights: jax.Array, example_ids: jax.Array) -> jax.Array:
  """The original's SQuAD loss, the mean of the start and end cross-entropies, each softmax over
  the window's own tokens.

  The original's softmax also takes in the padding positions; leaving them out (padding is never
  an answer) makes a window's loss independent of what else shares its row, which is what lets
  packed rows give the unpacked losses.

  Args:
    start_logits, end_logits: [batch, length].
    start_positions, end_positions: [batch] (one window per row), or [batch, slots] in packed
      rows, as columns of the row (the window's [CLS] when there is no answer).
    weights: Like the positions: 1 for a real window, 0 for padding or an empty slot.
    example_ids: [batch, length]: the input_mask of unpacked rows (1 = the window's token), or
      packed rows' example ids (k + 1 = slot k's token, 0 = padding).
  """
  if start_positions.ndim == 1:  # One window per row: slot 0.
    start_positions, end_positions = start_positions[:, None], end_positions[:, None]
    weights = weights[:, None]
  slots = jnp.arange(1, start_positions.shape[1] + 1)
  in_slot = example_ids[:, None, :] == slots[None, :, None]  # [batch, slots, length]

  def cross_entropy(logits, positions):
    logits = jnp.where(in_slot, logits[:, None, :].astype(jnp.float32), -1e9)
    return optax.softmax_cross_entropy_with_integer_labels(logits, positions)  # [batch, slots]

  losses = (cross_entropy(start_logits, start_positions) +
            cross_entropy(end_logits, end_positions)) / 2
  return _weighted_mean(losses, weights)


def token_loss(logits: jax.Array, label_ids: jax.Array, label_weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the labelled tokens (first sub-token of each word).

  logits [batch, length, num_labels], label_ids and label_weights [batch, length].
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, label_ids)
  return _weighted_mean(losses, label_weights)


def reinit_top_layers(pretrained: Any, fresh: Any, num_layers: int) -> Any:
  """The pre-trained encoder with its top `num_layers` layers and the pooler from `fresh`.

  Zhang et al. 2021 ("Revisiting few-sample BERT fine-tuning"): the top layers are the most
  specific to the pre-training objective, and a briefly pre-trained model's top layer maps
  every input's [CLS] to nearly the same vector, which few labels cannot move; a fresh top
  (the original's init) keeps the lower layers' knowledge without that. 0 = the original's
  fine-tuning, everything from the checkpoint.

  Args:
    pretrained: The checkpoint's 'bert' params (layers stacked on a leading axis, as scanned).
    fresh: The same tree as initialised for this run.
    num_layers: How many of the top encoder layers to take from `fresh` (the pooler too).
  """
  if num_layers <= 0:
    return pretrained
  first = jax.tree.leaves(pretrained["encoder"])[0].shape[0] - num_layers
  if first < 0:
    raise errors.UserError(f"train.reinit_top_layers={num_layers} is more than the model's "
                           f"{first + num_layers} layers")
  # [layers, ...]: layers first..last from the fresh init.
  encoder = jax.tree.map(lambda old, new: np.concatenate([old[:first], new[first:]]),
                         jax.device_get(pretrained["encoder"]), fresh["encoder"])
  return {**pretrained, "encoder": encoder, "pooler": fresh["pooler"]}
