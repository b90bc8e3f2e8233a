"""SQuAD v1.1 and v2.0 metrics, as the official evaluation scripts define them.

Exact match and token F1 after the official answer normalisation, the max over the gold answers,
and v2's search for the no-answer threshold. Host-side Python on strings, after the device is
done.
"""

import collections
from collections.abc import Mapping, Sequence
import re
import string


_PUNCTUATION = frozenset(string.punctuation)
# Articles as whole words. Punctuation is gone by the time this runs, so "the-end" has become
# "theend" and keeps its "the", as in the official script.
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
  """The official SQuAD answer normalisation, in its order.

  Lower-case; drop ASCII punctuation (`string.punctuation`: "1,000" becomes "1000", while
  unicode punctuation such as curly quotes stays); replace the whole words a/an/the by a space;
  collapse runs of whitespace to one space and strip the ends.
  """
  s = s.lower()
  s = "".join(character for character in s if character not in _PUNCTUATION)
  s = _ARTICLES.sub(" ", s)
  return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
  """1.0 when the two answers are equal after normalisation, else 0.0."""
  return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
  """F1 of the bag of normalised tokens shared by the two answers.

  v2.0's rule for empty answers: when either normalises to no tokens, the F1 is 1 if both do
  and 0 otherwise (v1.1 would score two empty answers 0; it has no empty golds to score).
  """
  predicted_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(ground_truth).split()
  if not predicted_tokens or not gold_tokens:
    return float(predicted_tokens == gold_tokens)
  # Tokens are a multiset: a repeated word matches at most as often as the other side has it.
  common = collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision, recall = num_same / len(predicted_tokens), num_same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _scoring_golds(answers: Sequence[str]) -> list[str]:
  # v2.0 drops gold answers that normalise to nothing and scores a question with none left
  # against the empty answer: that is what an unanswerable question's gold is.
  golds = [answer for answer in answers if normalize_answer(answer)]
  return golds or [""]


def _best_threshold(raw_scores: dict[str, float], gold: Mapping[str, Sequence[str]],
                    predictions: Mapping[str, str],
                    no_answer_probs: Mapping[str, float]) -> tuple[float, float]:
  """The no-answer threshold that maximises the total score, and that score in percent.

  A question is answered "" when its no-answer probability is above the threshold. Start with
  the threshold below every probability (every question abstains: the unanswerable ones score
  1), then raise it past the questions in order of probability, each switching to its own
  prediction. Questions that share a probability switch together: a threshold cannot separate
  them (the official script scores them one at a time, so with ties it can report a score that
  no threshold gives; without ties the two agree).
  """
  answered = [qas_id for qas_id in gold if qas_id in predictions]
  score = float(sum(1 for qas_id in answered if not gold[qas_id]))
  probabilities = sorted({no_answer_probs[qas_id] for qas_id in answered})
  # Below the smallest probability, reported as 0.0 like the official script when that works.
  best_score = score
  best_threshold = 0.0 if not probabilities or probabilities[0] > 0 else probabilities[0] - 1.0
  by_probability = collections.defaultdict(list)
  for qas_id in answered:
    by_probability[no_answer_probs[qas_id]].append(qas_id)
  for probability in probabilities:
    for qas_id in by_probability[probability]:
      if gold[qas_id]:
        score += raw_scores[qas_id]
      elif normalize_answer(predictions[qas_id]):
        score -= 1.0  # Unanswerable, and no longer abstaining.
    if score > best_score:
      best_score, best_threshold = score, probability
  return 100.0 * best_score / len(gold), best_threshold


def squad_evaluate(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                   no_answer_probs: Mapping[str, float] | None = None,
                   no_answer_threshold: float = 1.0) -> dict[str, float]:
  """SQuAD exact match and F1 in percent, as the official v1.1 and v2.0 scripts compute them.

  Each question scores the max over its gold answers. A question with no prediction scores 0
  in every metric, whatever its gold (v1.1 counts it wrong; v2.0 would drop it from the total,
  which would reward skipping hard questions). With every question answerable and no
  `no_answer_probs` this is exactly v1.1.

  Args:
    gold: qas_id -> gold answer texts; an empty list marks an unanswerable question (v2.0).
    predictions: qas_id -> predicted answer text, "" to abstain.
    no_answer_probs: qas_id -> the model's probability that the question has no answer; when
      given, a prediction is replaced by "" where the probability is above
      `no_answer_threshold`, and the best threshold is searched for.
    no_answer_threshold: see `no_answer_probs`.

  Returns:
    'exact_match', 'f1' and 'total'; with unanswerable questions, 'HasAns_*' and 'NoAns_*'
    (exact, f1, total) over each kind; 'missing' (questions without a prediction); and with
    `no_answer_probs`, 'best_exact', 'best_exact_thresh', 'best_f1', 'best_f1_thresh'.
  """
  if not gold:
    raise ValueError("no questions to score")
  if no_answer_probs is not None:
    without = [qas_id for qas_id in gold if qas_id in predictions and qas_id not in no_answer_probs]
    if without:
      raise ValueError(f"no no-answer probability for question {without[0]!r}")
  exact_scores, f1_scores = {}, {}
  for qas_id, answers in gold.items():
    if qas_id not in predictions:
      exact_scores[qas_id] = f1_scores[qas_id] = 0.0
      continue
    golds = _scoring_golds(answers)
    exact_scores[qas_id] = max(exact_match_score(predictions[qas_id], g) for g in golds)
    f1_scores[qas_id] = max(f1_score(predictions[qas_id], g) for g in golds)

  def thresholded(raw_scores):
    if no_answer_probs is None:
      return raw_scores
    # Abstaining is right exactly when the question has no answer.
    return {qas_id: float(not gold[qas_id])
            if qas_id in predictions and no_answer_probs[qas_id] > no_answer_threshold
            else score for qas_id, score in raw_scores.items()}

  exact, f1 = thresholded(exact_scores), thresholded(f1_scores)

  def summary(qas_ids, prefix=""):
    return {
        f"{prefix}exact" if prefix else "exact_match":
            100.0 * sum(exact[q] for q in qas_ids) / len(qas_ids),
        f"{prefix}f1": 100.0 * sum(f1[q] for q in qas_ids) / len(qas_ids),
        f"{prefix}total": len(qas_ids),
    }

  results = summary(list(gold))
  has_answer = [qas_id for qas_id, answers in gold.items() if answers]
  no_answer = [qas_id for qas_id, answers in gold.items() if not answers]
  if no_answer:
    if has_answer:
      results.update(summary(has_answer, "HasAns_"))
    results.update(summary(no_answer, "NoAns_"))
  results["missing"] = sum(1 for qas_id in gold if qas_id not in predictions)
  if no_answer_probs is not None:
    for name, raw_scores in (("exact", exact_scores), ("f1", f1_scores)):
      best, threshold = _best_threshold(raw_scores, gold, predictions, no_answer_probs)
      results[f"best_{name}"], results[f"best_{name}_thresh"] = best, threshold
  return results
