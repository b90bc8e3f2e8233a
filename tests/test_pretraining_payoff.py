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


def test_context_baselines_count_on_the_training_records(tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  data = tmp_path / "data"
  data.mkdir()

  def write(name, rows):
    with tf.io.TFRecordWriter(str(data / name)) as writer:
      for ids in rows:
        padded = ids + [0] * (8 - len(ids))
        features = {key: tf.train.Feature(int64_list=tf.train.Int64List(value=value))
                    for key, value in (("input_ids", padded),
                                       ("input_mask", [1] * len(ids) + [0] * (8 - len(ids))))}
        writer.write(tf.train.Example(
            features=tf.train.Features(feature=features)).SerializeToString())

  # [CLS] a b c [SEP]: 'b' always follows 'a'; 'c' follows 'b', or 'd' when 'e' comes next.
  write("train-00000.tfrecord", [[2, 10, 11, 12, 3]] * 3 + [[2, 10, 11, 13, 14, 3]])
  write("eval.tfrecord", [[2, 10, 11, 13, 14, 3]])
  baselines = pretraining_payoff.context_baselines(str(tmp_path))
  # Eval tokens 10, 11, 13, 14. Most frequent: 10 (tied with 11, counted first), right once.
  # Bigram: right but for 13, since 12 follows 11 more often. Trigram: (11, 14) gives 13.
  assert baselines == {"unigram": 0.25, "bigram": 0.75, "trigram": 1.0}
