"""bench/pretraining_payoff.py's tasks and its bag-of-words baseline (no training runs here)."""

import collections

from bench import pretraining_payoff


def test_word_order_task_swaps_two_plain_words_in_half_of_the_sentences():
  rows = pretraining_payoff.word_order_rows()
  counts = collections.Counter(label for _, label in rows)
  assert set(counts) == {"original", "swapped"} and abs(counts["original"] - counts["swapped"]) < 20
  assert len(rows) > 1500 and len({sentence for sentence, _ in rows}) == len(rows)
  originals = {sentence for sentence, label in rows if label == "original"}
  for sentence, _ in rows[:200]:
    assert 8 <= len(sentence.split()) <= 30
  # The same seed gives the same task.
  assert pretraining_payoff.word_order_rows() == rows
  assert all(sentence not in originals for sentence, label in rows if label == "swapped")


def test_bag_of_words_separates_keywords_and_is_at_chance_on_word_order():
  keyword_rows = [(f"the {word} is here {i}", word) for i in range(60)
                  for word in ("socket", "email")]
  train, validation, test = keyword_rows[:80], keyword_rows[80:100], keyword_rows[100:]
  assert pretraining_payoff.bag_of_words_accuracy(train, validation, test) == 1.0

  rows = pretraining_payoff.word_order_rows()
  accuracy = pretraining_payoff.bag_of_words_accuracy(rows[800:1100], rows[600:800], rows[:600])
  assert 0.4 < accuracy < 0.6  # Word counts do not tell a swapped sentence from its original.
