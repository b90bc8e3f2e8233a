"""Which task head a model carries, and what that head is called on each side.

A `Head` names one of bert_jax's model families (pre-training, or a fine-tuning task family)
with its labels. Each maps to one `transformers` architecture:

  pretraining      BertForPreTraining              'cls' (MLM + NSP)
  classification   BertForSequenceClassification   'classifier', problem_type single_label
  regression       BertForSequenceClassification   'classifier' [hidden, 1], problem_type regression
  token            BertForTokenClassification      'classifier' on every token (no pooler in HF)
  span             BertForQuestionAnswering        'qa_outputs' (start, end) (no pooler in HF)
  multiple_choice  BertForMultipleChoice           'classifier' [hidden, 1]: a score per choice

The params of a fine-tuned model are `{'bert': ..., <head>: {'kernel', 'bias'}}`, as
model/heads.py builds them; a pre-training model's are `{'bert': ..., 'cls': ...}`.
"""

import dataclasses
from typing import Any

import flax.linen as nn

from bert_jax import errors
from bert_jax.model import heads
from bert_jax.model import modeling

FAMILIES = ("pretraining", "classification", "regression", "token", "span", "multiple_choice")
ARCHITECTURES = {
    "pretraining": "BertForPreTraining",
    "classification": "BertForSequenceClassification",
    "regression": "BertForSequenceClassification",
    "token": "BertForTokenClassification",
    "span": "BertForQuestionAnswering",
    "multiple_choice": "BertForMultipleChoice",
}
# Our head's param group; HF names the same module the same way.
HEAD_PARAMS = {"classification": "classifier", "regression": "classifier",
               "token": "classifier", "span": "qa_outputs", "multiple_choice": "classifier"}
# HF builds these architectures' BertModel with add_pooling_layer=False: no pooler weights.
WITHOUT_POOLER = ("token", "span")


@dataclasses.dataclass(frozen=True)
class Head:
  """A model's task head.

  Attributes:
    family: One of FAMILIES.
    num_labels: Outputs per example (classification, token) or 1 (regression, and multiple
      choice: one score per choice); 2 for span (start, end); 0 for pre-training.
    label_names: Label names in id order (classification, token); None where there are none.
  """
  family: str = "pretraining"
  num_labels: int = 0
  label_names: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"head family {self.family!r} is not one of {FAMILIES}")

  @property
  def architecture(self) -> str:
    return ARCHITECTURES[self.family]

  @property
  def param_group(self) -> str | None:
    """The head's param group ('classifier', 'qa_outputs'), None for pre-training."""
    return HEAD_PARAMS.get(self.family)

  @property
  def labels(self) -> tuple[str, ...]:
    """The label names, or HF's generic LABEL_i where there are none."""
    return self.label_names or tuple(f"LABEL_{i}" for i in range(self.num_labels))

  @property
  def generic_labels(self) -> bool:
    """Whether the labels have no names of their own (HF's LABEL_i, or none at all)."""
    return self.labels == tuple(f"LABEL_{i}" for i in range(self.num_labels))

  def hf_config(self) -> dict[str, Any]:
    """The fields of HF's config.json that say which head this is and what its labels mean."""
    values: dict[str, Any] = {"architectures": [self.architecture]}
    if self.family in ("classification", "token"):
      values["id2label"] = {str(i): name for i, name in enumerate(self.labels)}
      values["label2id"] = {name: i for i, name in enumerate(self.labels)}
    if self.family == "classification":
      values["problem_type"] = "single_label_classification"
    elif self.family == "regression":
      values.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, problem_type="regression")
    return values


def from_hf_config(values: dict[str, Any], tensor_names, source: str) -> Head:
  """The head of an HF checkpoint: its config.json (`values`) and its tensors' names.

  Raises:
    errors.UserError: If the tensors hold a head that config.json does not name.
  """
  architecture = next(iter(values.get("architectures") or []), "")
  names = set(tensor_names)
  if "qa_outputs.weight" in names:
    return Head("span", 2)
  if "classifier.weight" not in names:
    return Head()
  id2label = values.get("id2label") or {}
  labels = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else None
  num_labels = len(labels) if labels else int(values.get("num_labels", 2))
  if architecture == "BertForTokenClassification":
    return Head("token", num_labels, labels)
  if architecture == "BertForMultipleChoice":
    return Head("multiple_choice", 1)
  if architecture != "BertForSequenceClassification":
    raise errors.UserError(
        f"{source}: has a 'classifier' but config.json names architectures={architecture or None!r}"
        "; set it to BertForSequenceClassification, BertForTokenClassification or "
        "BertForMultipleChoice")
  if values.get("problem_type") == "regression" or num_labels == 1:
    return Head("regression", 1)
  if values.get("problem_type") == "multi_label_classification":
    raise errors.UserError(f"{source}: problem_type='multi_label_classification' is not a "
                           "bert_jax task (one label per example)")
  return Head("classification", num_labels, labels)


def model_for(config: modeling.BertConfig, head: Head) -> nn.Module:
  """The bert_jax model whose params have this head."""
  if head.family == "pretraining":
    return modeling.BertForPreTraining(config)
  if head.family == "span":
    return heads.BertForQuestionAnswering(config)
  if head.family == "token":
    return heads.BertForTokenClassification(config, head.num_labels)
  if head.family == "multiple_choice":
    return heads.BertForMultipleChoice(config)
  return heads.BertForSequenceClassification(config, head.num_labels)


def dummy_inputs(head: Head, ids) -> tuple[Any, ...]:
  """The positional inputs `model_for(...).init` takes, all `ids` (a [1, 1] int array)."""
  if head.family == "multiple_choice":
    ids = ids[:, None]  # [batch, choices, length]
  # input_ids, segment_ids, input_mask (+ masked_lm_positions for pre-training).
  return (ids,) * (4 if head.family == "pretraining" else 3)
