"""Fine-tuning metrics against cases worked out by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest

from bert_jax.finetuning import squad_metrics
from bert_jax.finetuning import task_metrics as tm

# predictions vs labels: tp at 0 and 2, fn at 1, fp at 3, tn at 4.
_PREDICTIONS = [1, 0, 1, 1, 0]
_LABELS = [1, 1, 1, 0, 0]


def test_accuracy():
  assert tm.accuracy(_PREDICTIONS, _LABELS) == pytest.approx(3 / 5)  # Right at 0, 2, 4.
  assert isinstance(tm.accuracy(np.array(_PREDICTIONS), np.array(_LABELS)), float)


def test_binary_f1():
  # tp=2, fp=1, fn=1: P = R = 2/3, F1 = 2/3.
  assert tm.binary_f1(_PREDICTIONS, _LABELS) == pytest.approx(2 / 3)
  # Class 0 as positive: tp=1 (4), fp=1 (1), fn=1 (3): F1 = 2/(2+1+1) = 1/2.
  assert tm.binary_f1(_PREDICTIONS, _LABELS, positive=0) == pytest.approx(1 / 2)
  # No positive anywhere, or none predicted among positives: 0, not NaN.
  assert tm.binary_f1([0, 0], [0, 0]) == 0.0
  assert tm.binary_f1([0, 0], [1, 1]) == 0.0


def test_matthews_corrcoef():
  # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  assert tm.matthews_corrcoef(_PREDICTIONS, _LABELS) == pytest.approx(1 / 6)
  # All predictions one class: a zero factor in the denominator, reported as 0.
  assert tm.matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
  assert tm.matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
  assert tm.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
  assert tm.matthews_corrcoef([0, 1, 1, 0], [1, 0, 0, 1]) == pytest.approx(-1.0)


def test_matthews_corrcoef_multiclass():
  # predictions [0,1,2,2], labels [0,1,1,2]: s=4 examples, c=3 right, predicted counts p=[1,1,2],
  # label counts t=[1,2,1]. (c*s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)) = (12-5)/sqrt(10*10) = 0.7.
  assert tm.matthews_corrcoef([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.7)


def test_pearson():
  # x=[1,2,3], y=[2,4,7]: deviations [-1,0,1] and [-7/3,-1/3,8/3]; sum of products 5,
  # sums of squares 2 and 114/9: r = 5 / sqrt(228/9) = 15 / sqrt(228).
  assert tm.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
  assert tm.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert math.isnan(tm.pearson([1, 1, 1], [1, 2, 3]))  # Constant: undefined.


def test_spearman_with_ties():
  # Ranks of [1,2,2,3]: the tied 2s share (2+3)/2, so [1,2.5,2.5,4]; of [1,3,2,4]: [1,3,2,4].
  # Deviations from 2.5: [-1.5,0,0,1.5] and [-1.5,.5,-.5,1.5]; sum of products 4.5, sums of
  # squares 4.5 and 5: rho = 4.5 / sqrt(22.5) = sqrt(0.9).
  assert tm.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
  assert tm.spearman([1, 2, 3], [2, 4, 7]) == pytest.approx(1.0)  # Monotone, not linear.
  assert tm.spearman([0.1, 5.0, 2.0], [3, 1, 2]) == pytest.approx(-1.0)
  np.testing.assert_allclose(tm._average_ranks(np.array([7, 3, 7, 7, 1])), [4, 2, 4, 4, 1])


def test_glue_metrics():
  results = tm.glue_metrics(tm.GLUE_TASK_METRICS["mrpc"], _PREDICTIONS, _LABELS)
  assert results == pytest.approx(
      {"f1": 2 / 3, "accuracy": 3 / 5, "combined_score": (2 / 3 + 3 / 5) / 2})
  assert tm.glue_metrics(["matthews_corrcoef"], _PREDICTIONS, _LABELS) == pytest.approx(
      {"matthews_corrcoef": 1 / 6})
  with pytest.raises(ValueError, match="'bleu'"):
    tm.glue_metrics(["accuracy", "bleu"], _PREDICTIONS, _LABELS)
  with pytest.raises(ValueError):
    tm.accuracy([1, 0], [1, 0, 1])


def test_classification_and_regression_predictions():
  logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
  np.testing.assert_array_equal(tm.classification_predictions(logits), [1, 0])
  np.testing.assert_array_equal(tm.regression_predictions(np.array([[0.5], [4.2]])), [0.5, 4.2])


@pytest.mark.parametrize("text,normalized", [
    ("The  Cat!", "cat"),
    ("the theater", "theater"),  # Articles go as whole words only.
    ("An apple a day", "apple day"),
    ("1,000", "1000"),  # Punctuation goes before splitting: inside numbers too.
    ("the-end", "theend"),  # Punctuation goes before articles, so this "the" is no word.
    # Unicode punctuation is not in string.punctuation: it stays.
    ("\u201cquoted\u201d \u2014 dash", "\u201cquoted\u201d \u2014 dash"),
    ("\u201cthe\u201d", "\u201c \u201d"),  # Still a whole word between unicode punctuation.
    ("", ""),
    ("  a an the  ", ""),
    ("Tab\tand\nnewline", "tab and newline"),
])
def test_normalize_answer(text, normalized):
  assert squad_metrics.normalize_answer(text) == normalized


def test_exact_match_and_f1():
  assert squad_metrics.exact_match_score("The  Cat!", "cat") == 1.0
  assert squad_metrics.exact_match_score("cats", "cat") == 0.0
  # "the cat sat on the mat" -> [cat sat on mat]; "a cat on a mat" -> [cat on mat]: 3 shared,
  # P = 3/4, R = 1, F1 = 2 * 3/4 / (7/4) = 6/7.
  assert squad_metrics.f1_score("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
  # A repeated token matches once: P = 1/2, R = 1, F1 = 2/3.
  assert squad_metrics.f1_score("cat cat", "cat") == pytest.approx(2 / 3)
  assert squad_metrics.f1_score("dog", "cat") == 0.0
  # v2.0: empty against empty is right; empty against anything else is wrong.
  assert squad_metrics.f1_score("", "") == 1.0
  assert squad_metrics.f1_score("the", "") == 1.0  # Normalises to empty.
  assert squad_metrics.f1_score("", "cat") == 0.0
  assert squad_metrics.f1_score("cat", "") == 0.0


def test_squad_v1_max_over_golds_and_missing():
  gold = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["1,000 km"], "q3": ["Paris"]}
  predictions = {"q1": "Broncos", "q2": "1000 km long"}  # q3 missing: counts as wrong.
  results = squad_metrics.squad_evaluate(gold, predictions)
  # q1: EM 1 (vs "the Broncos"). q2: EM 0, F1: [1000 km long] vs [1000 km] = 2*(2/3)*1/(5/3)
  # = 4/5. q3: 0. EM = 1/3, F1 = (1 + 4/5 + 0)/3 = 0.6.
  assert results["exact_match"] == pytest.approx(100 / 3)
  assert results["f1"] == pytest.approx(60.0)
  assert results["total"] == 3 and results["missing"] == 1
  assert "HasAns_exact" not in results and "best_exact" not in results


def test_squad_v2_no_answer_scoring():
  gold = {"abstain_right": [], "answer_wrong": [], "abstain_wrong": ["x"], "right": ["y z"]}
  predictions = {"abstain_right": "", "answer_wrong": "x", "abstain_wrong": "", "right": "z"}
  results = squad_metrics.squad_evaluate(gold, predictions)
  # Exact: 1, 0, 0, 0. F1: 1, 0, 0, and [z] vs [y z]: P=1, R=1/2, F1=2/3.
  assert results["exact_match"] == pytest.approx(25.0)
  assert results["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)
  assert results["HasAns_exact"] == 0.0 and results["HasAns_f1"] == pytest.approx(100 / 3)
  assert results["NoAns_exact"] == 50.0 and results["NoAns_f1"] == 50.0
  assert (results["HasAns_total"], results["NoAns_total"]) == (2, 2)
  # A gold that normalises to nothing is a no-answer gold, as v2.0 filters it.
  assert squad_metrics.squad_evaluate({"q": ["The"]}, {"q": ""})["exact_match"] == 100.0


# Has-answer questions right at probabilities 0.1 and 0.4, unanswerable ones answered at 0.7 and
# 0.9. Sweeping the threshold up from below 0.1: everyone abstains (2 right), then q1 answers
# (3), q2 (4), q3 wrongly (3), q4 wrongly (2). Best: 4/4 at threshold 0.4.
_GOLD = {"q1": ["Rome"], "q2": ["Oslo"], "q3": [], "q4": []}
_PREDICTIONS_V2 = {"q1": "Rome", "q2": "oslo", "q3": "Lima", "q4": "Kyiv"}
_NO_ANSWER_PROBS = {"q1": 0.1, "q2": 0.4, "q3": 0.7, "q4": 0.9}


def test_squad_v2_threshold_search():
  results = squad_metrics.squad_evaluate(_GOLD, _PREDICTIONS_V2, _NO_ANSWER_PROBS)
  assert results["exact_match"] == 50.0  # Threshold 1.0: nobody abstains.
  assert results["best_exact"] == 100.0 and results["best_exact_thresh"] == 0.4
  assert results["best_f1"] == 100.0 and results["best_f1_thresh"] == 0.4
  # Abstaining above 0.5 makes q3 and q4 right.
  applied = squad_metrics.squad_evaluate(_GOLD, _PREDICTIONS_V2, _NO_ANSWER_PROBS, no_answer_threshold=0.5)
  assert applied["exact_match"] == 100.0 and applied["NoAns_exact"] == 100.0


def test_squad_v2_threshold_search_all_abstain_and_ties():
  # Every answer wrong: abstaining everywhere is best, 2/4 at a threshold below every probability.
  wrong = {"q1": "x", "q2": "y", "q3": "Lima", "q4": "Kyiv"}
  results = squad_metrics.squad_evaluate(_GOLD, wrong, _NO_ANSWER_PROBS)
  assert results["best_exact"] == 50.0 and results["best_exact_thresh"] == 0.0
  # q1 (right) and q3 (wrongly answered) tie at 0.5: no threshold answers one without the
  # other, so the best stays everyone abstaining (2/4), not 3/4.
  tied = {"q1": 0.5, "q2": 0.95, "q3": 0.5, "q4": 0.9}
  predictions = dict(_PREDICTIONS_V2, q2="x")
  results = squad_metrics.squad_evaluate(_GOLD, predictions, tied)
  assert results["best_exact"] == 50.0 and results["best_exact_thresh"] == 0.0
  # Whatever the best is, applying its threshold gives it back.
  for probs in (tied, _NO_ANSWER_PROBS, {"q1": 0.0, "q2": 0.0, "q3": 0.3, "q4": 0.0}):
    results = squad_metrics.squad_evaluate(_GOLD, predictions, probs)
    for name in ("exact", "f1"):
      applied = squad_metrics.squad_evaluate(_GOLD, predictions, probs,
                                  no_answer_threshold=results[f"best_{name}_thresh"])
      key = "exact_match" if name == "exact" else "f1"
      assert applied[key] == pytest.approx(results[f"best_{name}"])
  with pytest.raises(ValueError, match="q4"):
    squad_metrics.squad_evaluate(_GOLD, _PREDICTIONS_V2, {"q1": 0.1, "q2": 0.4, "q3": 0.7})


@pytest.mark.parametrize("tags,spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),  # Trailing entity.
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),  # Type change mid-entity.
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 1), ("PER", 1, 3)}),
    (["I-PER", "I-PER", "B-PER", "O", "I-LOC"],  # IOB1: entities start with I-.
     {("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)}),
    (["O", "I-ORG", "I-ORG"], {("ORG", 1, 3)}),
    (["S-PER", "B-LOC", "E-LOC", "I-LOC", "E-MISC"],  # IOBES: E and S close entities.
     {("PER", 0, 1), ("LOC", 1, 3), ("LOC", 3, 4), ("MISC", 4, 5)}),
    (["O", "O"], set()),
    ([], set()),
])
def test_entity_spans(tags, spans):
  assert tm.entity_spans(tags) == spans


def test_entity_spans_rejects_unknown_tags():
  with pytest.raises(ValueError, match="X-PER"):
    tm.entity_spans(["O", "X-PER"])


def test_entity_f1():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"], ["B-PER"]]
  predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG"], ["O"]]
  # Gold: PER 0-2, LOC 3-4 | ORG 0-1 | PER 0-1 (4). Predicted: PER 0-2, ORG 3-4 | ORG 0-2 (3).
  # Only PER 0-2 matches (ORG 0-2 has the wrong end): P = 1/3, R = 1/4, F1 = 2/7.
  results = tm.entity_f1(gold, predicted)
  assert results["precision"] == pytest.approx(1 / 3)
  assert results["recall"] == pytest.approx(1 / 4)
  assert results["f1"] == pytest.approx(2 / 7)
  assert (results["num_gold"], results["num_predicted"], results["num_correct"]) == (4, 3, 1)
  # PER: 1 of 1 predicted, 1 of 2 gold: F1 2/3. LOC: none predicted. ORG: 0 of 2.
  assert results["f1_PER"] == pytest.approx(2 / 3)
  assert results["f1_LOC"] == 0.0 and results["f1_ORG"] == 0.0
  assert all(isinstance(value, (int, float)) for value in results.values())


def test_entity_f1_perfect_zero_and_sentence_boundaries():
  gold = [["B-PER", "I-PER", "O"], ["I-LOC", "B-LOC"]]
  # IOB2 tags for the same entities as gold's IOB1: the spans, not the tags, are compared.
  assert tm.entity_f1(gold, [["B-PER", "I-PER", "O"], ["B-LOC", "B-LOC"]])["f1"] == 1.0
  assert tm.entity_f1(gold, [["O"] * 3, ["O"] * 2])["f1"] == 0.0
  assert tm.entity_f1([["O"]], [["O"]])["f1"] == 0.0  # Nothing to find: undefined, so 0.
  # The same span in another sentence is no match.
  assert tm.entity_f1([["B-PER"], ["O"]], [["O"], ["B-PER"]])["f1"] == 0.0
  with pytest.raises(ValueError, match="sentence 1"):
    tm.entity_f1(gold, [["O"] * 3, ["O"]])
