"""The tasks of bench/payoff_tasks.py and bench/unseen_text.py, and bench/pretraining_payoff.py's
baselines and settings (no training runs here)."""

import collections
import csv
import json
import subprocess
import sys

from bench import payoff_tasks
from bench import pretraining_payoff
from bench import unseen_text


def _reference_rows(make_rows):
  return make_rows(payoff_tasks.reference_sentences())


def test_word_order_task_swaps_two_plain_words_in_half_of_the_sentences():
  rows = _reference_rows(payoff_tasks.word_order_rows)
  counts = collections.Counter(label for _, label in rows)
  assert set(counts) == {"original", "swapped"} and abs(counts["original"] - counts["swapped"]) < 20
  assert len(rows) > 1500 and len({sentence for sentence, _ in rows}) == len(rows)
  originals = {sentence for sentence, label in rows if label == "original"}
  for sentence, _ in rows[:200]:
    assert 8 <= len(sentence.split()) <= 30
  # The same seed gives the same task.
  assert _reference_rows(payoff_tasks.word_order_rows) == rows
  assert all(sentence not in originals for sentence, label in rows if label == "swapped")


def test_bag_of_words_separates_keywords_and_is_at_chance_on_word_order():
  keyword_rows = [(f"the {word} is here {i}", word) for i in range(60)
                  for word in ("socket", "email")]
  train, validation, test = keyword_rows[:80], keyword_rows[80:100], keyword_rows[100:]
  assert pretraining_payoff.bag_of_words_accuracy(train, validation, test) == 1.0

  rows = _reference_rows(payoff_tasks.word_order_rows)
  accuracy = pretraining_payoff.bag_of_words_accuracy(rows[800:1100], rows[600:800], rows[:600])
  assert 0.4 < accuracy < 0.6  # Word counts do not tell a swapped sentence from its original.


def test_replaced_word_task_changes_one_plain_word_in_half_of_the_sentences(tmp_path):
  path = tmp_path / "lines.txt"
  lines = [f"This is sentence {i} of a text that goes on and on." for i in range(40)]
  path.write_text("\n".join(lines + ["Too short to use.", "Not at all a long one"]) + "\n")
  sentences = payoff_tasks.file_sentences(str(path))
  assert sentences == sorted(lines)
  rows = payoff_tasks.replaced_word_rows(sentences)
  assert collections.Counter(label for _, label in rows) == {"original": 20, "replaced": 20}
  for sentence, label in rows:
    words = sentence.split()
    original = lines[int(words[3])].split()  # The number is not a plain word: never replaced.
    assert sum(a != b for a, b in zip(words, original)) == (label == "replaced")
  assert payoff_tasks.replaced_word_rows(sentences) == rows
  # On real text, word counts do not tell a replaced word either.
  rows = _reference_rows(payoff_tasks.replaced_word_rows)
  accuracy = pretraining_payoff.bag_of_words_accuracy(rows[800:1100], rows[600:800], rows[:600])
  assert 0.4 < accuracy < 0.6


def test_unseen_text_keeps_labelled_sentences_out_of_the_text(tmp_path):
  package = tmp_path / "pkg"
  for topic in ("alpha", "beta", "_private"):
    (package / topic).mkdir(parents=True)
    (package / topic / "mod.py").write_text("\n".join(
        f'def f{i}():\n  """The {topic} function number {i} does its own {topic} work."""'
        for i in range(10)))
  (package / "alpha" / "tests").mkdir()
  (package / "alpha" / "tests" / "test_mod.py").write_text('"""A test module is not prose text."""')
  by_topic = unseen_text.package_sentences(str(package))
  topics = unseen_text.scipy_topics(by_topic, num_labels=2)
  text, rows = unseen_text.make(by_topic, topics, per_label=4)
  assert collections.Counter(label for _, label in rows) == {"alpha": 4, "beta": 4}
  assert not set(text) & {sentence for sentence, _ in rows}
  assert len(text) == 30 - 8 and not any("test module" in s for s in text)
  assert text[:2] == [f"The _private function number {i} does its own _private work."
                      for i in range(2)]  # Reading order, not shuffled.
  everything, same_rows = unseen_text.make(by_topic, topics, per_label=4, labelled_in_text=True)
  assert same_rows == rows and len(everything) == 30 and set(text) < set(everything)

  # The command writes them where --task and data.input_files read them.
  out = tmp_path / "out"
  subprocess.run([sys.executable, "-m", "bench.unseen_text", f"--output_dir={out}",
                  "--per_label=20", "--num_labels=3"], check=True)
  with open(out / "labelled.csv", newline="", encoding="utf-8") as f:
    labelled = list(csv.DictReader(f))
  assert len(labelled) == 60 and len({row["label"] for row in labelled}) == 3
  text_lines = (out / "text.txt").read_text(encoding="utf-8").splitlines()
  assert len(text_lines) > 5000 and "" not in text_lines
  assert not {row["sentence"] for row in labelled} & set(text_lines)
  assert payoff_tasks.task_rows(str(out / "labelled.csv"))[0][1] in {
      row["label"] for row in labelled}


def test_fortunes_one_per_line_by_file(tmp_path):
  (tmp_path / "science").write_text(
      "Physics is like sex: sure, it may give some practical results,\n"
      "but that's not why we do it.\n\t\t-- Richard Feynman\n%\nShort.\n%\n"
      "  ____  \n |    |   art is not prose at all, whatever the words\n%\n")
  (tmp_path / "science.dat").write_bytes(b"\0\1")
  assert unseen_text.fortunes_by_file(str(tmp_path)) == {"science": [
      "Physics is like sex: sure, it may give some practical results, but that's not why we "
      "do it. -- Richard Feynman"]}


def test_vocab_file_of_a_workdir_or_a_model_directory(tmp_path):
  (tmp_path / "workdir" / "data").mkdir(parents=True)
  (tmp_path / "workdir" / "data" / "metadata.json").write_text(
      json.dumps({"vocab_file": "/somewhere/vocab.model"}))
  assert pretraining_payoff._vocab_file(str(tmp_path / "workdir")) == "/somewhere/vocab.model"
  (tmp_path / "hf").mkdir()
  assert pretraining_payoff._vocab_file(str(tmp_path / "hf")) is None
  (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n")
  assert pretraining_payoff._vocab_file(str(tmp_path / "hf")) == str(tmp_path / "hf" / "vocab.txt")


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


def test_a_second_invocation_with_other_run_settings_is_refused(tmp_path, capsys):
  import argparse  # pylint: disable=import-outside-toplevel
  import pytest  # pylint: disable=import-outside-toplevel
  args = argparse.Namespace(output_dir=str(tmp_path), pretrained="/tmp/tiny", task="packages",
                            sentences="", epochs=30.0, max_seq_length=64, num_validation=200,
                            num_test=600, reinit_top_layers=0)
  parser = argparse.ArgumentParser()
  pretraining_payoff._check_settings(parser, args)
  pretraining_payoff._check_settings(parser, args)  # The same settings: its runs are reused.
  args.epochs = 10.0
  with pytest.raises(SystemExit):
    pretraining_payoff._check_settings(parser, args)
  assert "--epochs=10.0 (was 30.0)" in capsys.readouterr().err
