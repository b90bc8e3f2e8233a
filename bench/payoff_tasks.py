"""The labelled tasks of bench/pretraining_payoff.py: made here, or read from a CSV.

Each task is a list of (sentence, label) rows in a fixed order (seeded shuffles), so the same
rows land in the same test, validation and training splits on every run.
"""

import csv
import os
import random

from bert_jax.finetuning.data import example_task
from bert_jax.pretraining.data import corpus


def reference_sentences() -> list[str]:
  """Prose sentences of the Python language reference (pydoc_data/topics.py), sorted."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  return sorted({s for text in topics.topics.values() for s in corpus.split_sentences(text)
                 if 8 <= len(s.split()) <= 30 and s[0].isupper() and "  " not in s})


def file_sentences(path: str) -> list[str]:
  """The lines of a one-sentence-per-line text file with 8 to 30 words, sorted."""
  with open(path, encoding="utf-8") as f:
    return sorted({line.strip() for line in f if 8 <= len(line.split()) <= 30})


def _plain_positions(words: list[str]) -> list[int]:
  # Plain lower-case words: no capital, punctuation or markup gives a change away.
  return [k for k, word in enumerate(words) if word.isalpha() and word.islower()]


def word_order_rows(sentences: list[str], seed: int = 0) -> list[tuple[str, str]]:
  """(sentence, 'original' | 'swapped'): half the sentences with two plain words swapped."""
  sentences = list(sentences)
  rng = random.Random(seed)
  rng.shuffle(sentences)
  rows = []
  for index, sentence in enumerate(sentences):
    words = sentence.split()
    if index % 2:
      plain = _plain_positions(words)
      if len(set(words[k] for k in plain)) < 2:
        continue
      i, j = rng.sample(plain, 2)
      while words[i] == words[j]:
        i, j = rng.sample(plain, 2)
      words[i], words[j] = words[j], words[i]
      rows.append((" ".join(words), "swapped"))
    else:
      rows.append((sentence, "original"))
  return rows


def replaced_word_rows(sentences: list[str], seed: int = 0) -> list[tuple[str, str]]:
  """(sentence, 'original' | 'replaced'): half the sentences with one plain word replaced.

  The replacement is drawn from the plain words' own frequencies in these sentences, so the
  replaced sentences hold the same kinds of words as the originals: word counts say little,
  and telling "the of" from "the list" takes knowing which word fits its context.
  """
  sentences = list(sentences)
  rng = random.Random(seed)
  rng.shuffle(sentences)
  pool = [words[k] for words in map(str.split, sentences) for k in _plain_positions(words)]
  rows = []
  for index, sentence in enumerate(sentences):
    words = sentence.split()
    plain = _plain_positions(words)
    if index % 2 and plain:
      k = rng.choice(plain)
      replacement = rng.choice(pool)
      while replacement == words[k]:
        replacement = rng.choice(pool)
      words[k] = replacement
      rows.append((" ".join(words), "replaced"))
    elif not index % 2:
      rows.append((sentence, "original"))
  return rows


def task_rows(task: str, sentences_file: str = "") -> list[tuple[str, str]]:
  if task in ("word_order", "replaced_word"):
    sentences = file_sentences(sentences_file) if sentences_file else reference_sentences()
    return (word_order_rows if task == "word_order" else replaced_word_rows)(sentences)
  if task == "packages":
    rows = example_task.labelled_sentences()
    random.Random(0).shuffle(rows)
    return rows
  with open(task, newline="", encoding="utf-8") as f:
    rows = [(row["sentence"], row["label"]) for row in csv.DictReader(f)]
  random.Random(0).shuffle(rows)
  return rows


def write_csv(path: str, rows: list[tuple[str, str]]) -> str:
  """Writes `sentence,label` rows to path (complete or not at all: renamed into place)."""
  with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["sentence", "label"])
    writer.writerows(rows)
  os.replace(path + ".tmp", path)
  return path
