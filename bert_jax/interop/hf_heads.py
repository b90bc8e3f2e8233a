"""Which task head a model carries, and what that head is called on each side.

A `Head` names a task family (model/families.py: pre-training, or a fine-tuning family) with
its labels; the family's record says which `transformers` architecture it exports as, with
which config.json fields, and which param group holds it. The params of a fine-tuned model are
`{'bert': ..., <param group>: {'kernel', 'bias'}}`, as model/heads.py builds them; a pre-training
model's are `{'bert': ..., 'cls': ...}`.
"""

import dataclasses
from typing import Any

import flax.linen as nn

from bert_jax import errors
from bert_jax.model import families
from bert_jax.model import modeling


@dataclasses.dataclass(frozen=True)
class Head:
  """A model's task head.

  Attributes:
    family: A registered family's name (model/families.py).
    num_labels: Outputs per example (classification, token) or the family's own (1 for
      regression and multiple choice, 2 for span); 0 for pre-training.
    label_names: Label names in id order (classification, token); None where there are none.
  """
  family: str = "pretraining"
  num_labels: int = 0
  label_names: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.family not in families.FAMILIES:
      raise ValueError(f"head family {self.family!r} is not one of {tuple(families.FAMILIES)}")

  @property
  def record(self) -> families.Family:
    return families.FAMILIES[self.family]

  @property
  def architecture(self) -> str:
    """The transformers architecture, or for a family without one what it is."""
    hf = self.record.hf
    return hf.architecture if hf else f"a {self.family} model"

  @property
  def param_group(self) -> str:
    """The head's param group ('cls', 'classifier', 'qa_outputs')."""
    return self.record.param_group

  @property
  def labels(self) -> tuple[str, ...]:
    """The label names, or HF's generic LABEL_i where there are none."""
    return self.label_names or tuple(f"LABEL_{i}" for i in range(self.num_labels))

  @property
  def generic_labels(self) -> bool:
    """Whether the labels have no names of their own (HF's LABEL_i, or none at all)."""
    return self.labels == tuple(f"LABEL_{i}" for i in range(self.num_labels))

  def hf_config(self) -> dict[str, Any]:
    """The fields of config.json that say which head this is and what its labels mean.

    A family with no transformers architecture records itself under 'bert_jax_family', so that
    bert_jax's own params dirs (export_orbax) still load with their head.
    """
    hf = self.record.hf
    if hf is None:
      return {"architectures": [], "bert_jax_family": self.family, "num_labels": self.num_labels,
              "id2label": {str(i): name for i, name in enumerate(self.labels)}}
    values: dict[str, Any] = {"architectures": [hf.architecture]}
    if hf.labels:
      values["id2label"] = {str(i): name for i, name in enumerate(self.labels)}
      values["label2id"] = {name: i for i, name in enumerate(self.labels)}
    if hf.problem_type:
      values["problem_type"] = hf.problem_type
    return values


def from_hf_config(values: dict[str, Any], tensor_names, source: str) -> Head:
  """The head of an HF checkpoint: its config.json (`values`) and its tensors' names.

  The param group found among the tensors and config.json's architecture (and problem_type,
  where families share an architecture) name the family.

  Raises:
    errors.UserError: If the tensors hold a head that config.json does not name.
  """
  id2label = values.get("id2label") or {}
  labels = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else None
  if values.get("bert_jax_family") in families.FAMILIES:
    family = families.FAMILIES[values["bert_jax_family"]]
    return Head(family.name, family.num_labels or int(values.get("num_labels") or 0),
                None if family.num_labels else labels)
  names = set(tensor_names)
  heads = [f for f in families.FAMILIES.values()
           if not f.pretraining and f"{f.param_group}.weight" in names]
  if not heads:
    return Head()
  architecture = next(iter(values.get("architectures") or []), "")
  named = [f for f in heads if f.hf and f.hf.architecture == architecture]
  if len({f.param_group for f in heads}) == 1 and len({f.hf.architecture for f in heads
                                                       if f.hf}) == 1:
    named = named or [f for f in heads if f.hf]  # One architecture has this group: it is that.
  if not named:
    known = sorted({f.hf.architecture for f in heads if f.hf})
    raise errors.UserError(
        f"{source}: has a {heads[0].param_group!r} head but config.json names architectures="
        f"{architecture or None!r}; set it to one of {', '.join(known)}")
  num_labels = len(labels) if labels else int(values.get("num_labels", 2))
  problem_type = values.get("problem_type")
  if len(named) > 1:  # Families that share an architecture: problem_type tells them apart.
    named = ([f for f in named if f.hf.problem_type == problem_type] if problem_type else
             [f for f in named if f.num_labels == num_labels] or
             [f for f in named if not f.num_labels])
  if len(named) != 1:
    raise errors.UserError(f"{source}: problem_type={problem_type!r} of {architecture} is not a "
                           "bert_jax task family's")
  # A family that fixes its outputs (regression's one) has no label names.
  family = named[0]
  return Head(family.name, family.num_labels or num_labels, None if family.num_labels else labels)


def model_for(config: modeling.BertConfig, head: Head) -> nn.Module:
  """The bert_jax model whose params have this head."""
  return head.record.build(config, head.num_labels)


def dummy_inputs(head: Head) -> tuple[Any, ...]:
  """The positional inputs `model_for(...).init` takes: one example of one token."""
  return families.model_inputs(head.record.dummy_batch(1, 1, head.num_labels))
