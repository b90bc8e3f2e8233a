"""Fine-tuning metrics, defined as the official scripts of each benchmark define them.

GLUE: accuracy, F1 of the positive class (MRPC, QQP), Matthews correlation (CoLA), Pearson and
Spearman correlation (STS-B). NER: entity-level precision/recall/F1 as conlleval counts entities
(exact type and boundaries). SQuAD's are in squad_metrics.py.

Everything here runs on the host on numpy arrays and Python strings, after the device is done:
predictions come back from the eval step as logits, `classification_predictions` turns them into
labels, and the functions below never see a jax array or a tracer.
"""

from collections.abc import Sequence

import numpy as np

# The metrics each GLUE task reports, as the GLUE leaderboard does (tfds `glue/<name>` configs).
GLUE_TASK_METRICS = {
    "cola": ("matthews_corrcoef",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}


# ---------------------------------------------------------------------------------------------
# Classification and regression (GLUE).
# ---------------------------------------------------------------------------------------------


def _paired(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
  predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
  if predictions.shape != labels.shape:
    raise ValueError(f"{predictions.size} predictions for {labels.size} labels")
  if predictions.size == 0:
    raise ValueError("no examples to score")
  return predictions, labels


def classification_predictions(logits) -> np.ndarray:
  """The predicted class of each example.

  Args:
    logits: [..., num_classes] scores (logits or probabilities: argmax is the same).

  Returns:
    [...] int array of class indices.
  """
  return np.argmax(np.asarray(logits), axis=-1)


def regression_predictions(logits) -> np.ndarray:
  """The predicted score of each example of a regression head (STS-B), [..., 1] -> [...]."""
  logits = np.asarray(logits)
  if logits.shape[-1:] != (1,):
    raise ValueError(f"a regression head has one output, got logits of shape {logits.shape}")
  return logits[..., 0]


def accuracy(predictions, labels) -> float:
  """Fraction of examples whose prediction equals the label."""
  predictions, labels = _paired(predictions, labels)
  return float(np.mean(predictions == labels))


def binary_f1(predictions, labels, positive=1) -> float:
  """F1 of the positive class (MRPC, QQP report this, not a macro average).

  Precision and recall of an empty set are taken as 0, so the F1 is 0 when there are no true
  positives (the same value as when they are defined and tp is 0).
  """
  predictions, labels = _paired(predictions, labels)
  predicted, actual = predictions == positive, labels == positive
  true_positives = int(np.sum(predicted & actual))
  # F1 = 2PR / (P + R) = 2tp / (2tp + fp + fn): one division, defined unless all three are 0.
  denominator = int(np.sum(predicted)) + int(np.sum(actual))
  return 2.0 * true_positives / denominator if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation coefficient (CoLA), 0.0 when it is undefined.

  Computed from the confusion matrix in its K-class form (Gorodkin's R_K), which for two classes
  is the familiar (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)). A constant prediction
  or a constant label makes a factor of the denominator 0; the convention is to report 0 (no
  better than chance) rather than NaN.
  """
  predictions, labels = _paired(predictions, labels)
  classes, index = np.unique(np.concatenate([predictions, labels]), return_inverse=True)
  num_classes, total = len(classes), predictions.size
  predicted_index, label_index = index[:total], index[total:]
  predicted_counts = np.bincount(predicted_index, minlength=num_classes).astype(np.float64)
  label_counts = np.bincount(label_index, minlength=num_classes).astype(np.float64)
  correct = float(np.sum(predicted_index == label_index))
  covariance = correct * total - predicted_counts @ label_counts
  predicted_variance = float(total) ** 2 - predicted_counts @ predicted_counts
  label_variance = float(total) ** 2 - label_counts @ label_counts
  if predicted_variance == 0 or label_variance == 0:
    return 0.0
  return float(covariance / np.sqrt(predicted_variance * label_variance))


def pearson(x, y) -> float:
  """Pearson correlation of two samples; NaN when either is constant (as scipy's pearsonr)."""
  x, y = _paired(x, y)
  x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
  y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  if denominator == 0:
    return float("nan")
  # Clipped: rounding can put a perfect correlation a hair outside [-1, 1].
  return float(np.clip(np.sum(x * y) / denominator, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of the ranks they span."""
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  last_rank = np.cumsum(counts)  # A group of c ties spans ranks last - c + 1 .. last.
  return (last_rank - (counts - 1) / 2.0)[inverse]


def spearman(x, y) -> float:
  """Spearman rank correlation: Pearson of the average ranks, so ties are handled exactly."""
  x, y = _paired(x, y)
  return pearson(_average_ranks(x), _average_ranks(y))


_GLUE_METRICS = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_metrics(metric_names: Sequence[str], predictions, labels) -> dict[str, float]:
  """The named metrics, plus 'combined_score' (their mean) when there are several.

  GLUE scores a task with two metrics (MRPC and QQP: F1 and accuracy; STS-B: Pearson and
  Spearman) by their mean, so 'combined_score' is the one number to select checkpoints on.

  Args:
    metric_names: names from 'accuracy', 'f1', 'matthews_corrcoef', 'pearson', 'spearman'; see
      `GLUE_TASK_METRICS` for each task's.
    predictions: [num_examples] predicted class ids, or scores for 'pearson' and 'spearman'.
    labels: [num_examples] gold class ids or scores.

  Returns:
    {name: value} for each name, and 'combined_score' if there is more than one.
  """
  unknown = [name for name in metric_names if name not in _GLUE_METRICS]
  if unknown:
    raise ValueError(f"unknown metric {unknown[0]!r}; known: {sorted(_GLUE_METRICS)}")
  results = {name: _GLUE_METRICS[name](predictions, labels) for name in metric_names}
  if len(results) > 1:
    results["combined_score"] = float(np.mean(list(results.values())))
  return results


# ---------------------------------------------------------------------------------------------
# Named-entity recognition.
# ---------------------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
  """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); a bare 'B' -> ('B', '')."""
  if tag == "O":
    return "O", ""
  prefix, _, entity_type = tag.partition("-")
  if prefix not in ("B", "I", "E", "S"):
    raise ValueError(f"tag {tag!r} is not O or B-, I-, E-, S- and a type")
  return prefix, entity_type


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """The entities of one tagged sentence as (type, start, end), `end` exclusive.

  Reads IOB2 ('B-' starts every entity) and IOB1 (an entity may start with 'I-') alike, as
  conlleval does: 'I-X' continues an open entity of type X and starts a new one after 'O', after
  the end of an entity or after another type. 'E-'/'S-' (IOBES) close an entity and make a
  one-token one, so IOBES tags read right too.
  """
  spans = set()
  open_type, open_start = None, 0  # The entity being read, if any.
  for position, tag in enumerate(tags):
    prefix, entity_type = _split_tag(tag)
    continues = prefix in ("I", "E") and open_type == entity_type
    if not continues:
      if open_type is not None:
        spans.add((open_type, open_start, position))
      open_type, open_start = (None, 0) if prefix == "O" else (entity_type, position)
    if prefix in ("E", "S"):  # Ends the entity just opened or continued, at this token.
      spans.add((open_type, open_start, position + 1))
      open_type = None
  if open_type is not None:
    spans.add((open_type, open_start, len(tags)))
  return spans


def _precision_recall_f1(num_correct: int, num_predicted: int, num_gold: int) -> dict[str, float]:
  precision = num_correct / num_predicted if num_predicted else 0.0
  recall = num_correct / num_gold if num_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


def entity_f1(gold_sequences: Sequence[Sequence[str]],
              predicted_sequences: Sequence[Sequence[str]]) -> dict:
  """Entity-level precision, recall and F1, micro-averaged over all sentences (conlleval).

  An entity counts as found only if a predicted entity has its type and both of its boundaries
  in the same sentence. Each of precision, recall and F1 is 0 where it is undefined (nothing
  predicted, nothing to find).

  Args:
    gold_sequences: per sentence, the gold tag of each word.
    predicted_sequences: per sentence, the predicted tag of each word (same lengths).

  Returns:
    'precision', 'recall', 'f1', the counts 'num_gold', 'num_predicted', 'num_correct', and
    'f1_<type>' for every entity type in gold or prediction ('f1_PER').
  """
  if len(gold_sequences) != len(predicted_sequences):
    raise ValueError(f"{len(predicted_sequences)} predicted sentences for "
                     f"{len(gold_sequences)} gold")
  gold_entities, predicted_entities = set(), set()
  for sentence, (gold_tags, predicted_tags) in enumerate(zip(gold_sequences, predicted_sequences)):
    if len(gold_tags) != len(predicted_tags):
      raise ValueError(f"sentence {sentence}: {len(predicted_tags)} predicted tags for "
                       f"{len(gold_tags)} gold")
    gold_entities |= {(sentence, *span) for span in entity_spans(gold_tags)}
    predicted_entities |= {(sentence, *span) for span in entity_spans(predicted_tags)}
  correct = gold_entities & predicted_entities

  def count(entities, entity_type):
    return sum(1 for entity in entities if entity[1] == entity_type)

  types = sorted({entity[1] for entity in gold_entities | predicted_entities})
  results = _precision_recall_f1(len(correct), len(predicted_entities), len(gold_entities))
  results.update(num_gold=len(gold_entities), num_predicted=len(predicted_entities),
                 num_correct=len(correct))
  # Flat keys, so the dict goes to a scalar writer or a log line as it is.
  for entity_type in types:
    results[f"f1_{entity_type}"] = _precision_recall_f1(
        count(correct, entity_type), count(predicted_entities, entity_type),
        count(gold_entities, entity_type))["f1"]
  return results
