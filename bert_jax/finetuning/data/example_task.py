"""Small tasks made from the embedded corpus, to try fine-tuning end to end with no download.

    python -m bert_jax.finetuning.data.example_task --output_dir=DIR [--format=squad|swag]

Default: DIR/train.csv and DIR/dev.csv (columns `sentence,label`; labels asyncio, email,
unittest, xml): which package a docstring sentence of this Python's standard library is from,
a real classification task (README, "Fine-tuning").

`--format=squad`: DIR/train.json and DIR/dev.json in SQuAD v1.1's format, a cloze task on the
same packages' docstrings: the context is a run of up to PARAGRAPH_SENTENCES sentences, the
question one of them with a word replaced by "what", the answer that word in the context.
Contexts of real docstring length, for `task=squad` on local files (docs/finetuning.md).

`--format=swag`: DIR/train.csv and DIR/dev.csv in SWAG's CSV layout (sent1, sent2,
ending0..ending3, label): a docstring sentence, the first SWAG_START_WORDS words of the
sentence after it, and four endings of which one is the rest of that sentence; `task=swag`.
"""

import csv
import json
import os
import random
import re
import sysconfig

from absl import app
from absl import flags

from bert_jax import errors
from bert_jax import files
from bert_jax.pretraining.data import corpus

PACKAGES = ("asyncio", "email", "unittest", "xml")


def labelled_sentences(stdlib_dir: str | None = None,
                       min_words: int = 5) -> list[tuple[str, str]]:
  """(sentence, package) for every distinct docstring sentence of PACKAGES' modules."""
  stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
  seen, rows = set(), []
  for package in PACKAGES:
    for document in corpus.stdlib_documents(os.path.join(stdlib_dir, package)):
      for sentence in document:
        if len(sentence.split()) >= min_words and sentence not in seen:
          seen.add(sentence)
          rows.append((sentence, package))
  return rows


def _write_splits(output_dir: str, items: list, dev_fraction: float, seed: int,
                  names: tuple[str, str], write, size=len) -> dict[str, int]:
  """Shuffles `items` (seeded), writes the first dev_fraction of them to names[0] (dev) and
  the rest to names[1] (train), each under a temporary name renamed when complete; returns
  each file's `size`."""
  random.Random(seed).shuffle(items)
  num_dev = int(len(items) * dev_fraction)
  os.makedirs(output_dir, exist_ok=True)
  sizes = {}
  for name, part in ((names[0], items[:num_dev]), (names[1], items[num_dev:])):
    path = os.path.join(output_dir, name)
    with files.whole(path) as partial, open(partial, "w", newline="") as f:
      write(f, part)
    sizes[name] = size(part)
  return sizes


def _csv_writer(header: list[str]):
  def write(f, rows):
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return write


def write_task(output_dir: str, dev_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
  """Shuffles the sentences (seeded) and writes train.csv and dev.csv; returns their sizes."""
  return _write_splits(output_dir, labelled_sentences(), dev_fraction, seed,
                       ("dev.csv", "train.csv"), _csv_writer(["sentence", "label"]))


PARAGRAPH_SENTENCES = 6
# Answer words: plain words of 4+ letters (no identifiers, no numbers).
_ANSWER_WORD = re.compile(r"[A-Za-z]{4,}")


def cloze_articles(stdlib_dir: str | None = None, seed: int = 0) -> list[dict]:
  """SQuAD v1.1 articles: one per module, a paragraph per PARAGRAPH_SENTENCES sentences, a
  question per sentence that has a word found nowhere else in its paragraph."""
  stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
  rng = random.Random(seed)
  articles = []
  for package in PACKAGES:
    for number, document in enumerate(corpus.stdlib_documents(os.path.join(stdlib_dir,
                                                                           package))):
      paragraphs = []
      for first in range(0, len(document), PARAGRAPH_SENTENCES):
        sentences = document[first:first + PARAGRAPH_SENTENCES]
        context = " ".join(sentences)
        qas, offset = [], 0
        for index, sentence in enumerate(sentences):
          words = sentence.split(" ")
          unique = [i for i, word in enumerate(words) if _ANSWER_WORD.fullmatch(word)
                    and len(re.findall(rf"\b{word}\b", context)) == 1]
          if len(words) >= 5 and unique:
            i = rng.choice(unique)
            question = " ".join(words[:i] + ["what"] + words[i + 1:])
            start = offset + len(" ".join(words[:i])) + (1 if i else 0)
            assert context[start:start + len(words[i])] == words[i]
            qas.append({"id": f"{package}-{number}-{first + index}", "question": question,
                        "answers": [{"text": words[i], "answer_start": start}]})
          offset += len(sentence) + 1
        if qas:
          paragraphs.append({"context": context, "qas": qas})
      if paragraphs:
        articles.append({"title": f"{package}-{number}", "paragraphs": paragraphs})
  return articles


def write_squad_task(output_dir: str, dev_fraction: float = 0.2, seed: int = 0
                     ) -> dict[str, int]:
  """Shuffles the articles (seeded), writes train.json and dev.json; returns their questions."""
  return _write_splits(
      output_dir, cloze_articles(seed=seed), dev_fraction, seed, ("dev.json", "train.json"),
      lambda f, part: json.dump({"version": "1.1", "data": part}, f),
      lambda part: sum(len(p["qas"]) for a in part for p in a["paragraphs"]))


# The words of the next sentence given as the start of every ending (SWAG's sent2).
SWAG_START_WORDS = 3


def swag_rows(stdlib_dir: str | None = None, seed: int = 0) -> list[list]:
  """SWAG's CSV rows [sent1, sent2, ending0..ending3, label]: a docstring sentence, the first
  words of the sentence after it, and four endings, one the rest of that sentence and three
  the rests of other sentences of the same package (so the topic alone does not tell)."""
  stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
  rng = random.Random(seed)
  rows = []
  for package in PACKAGES:
    pairs = [(first, second.split(" "))
             for document in corpus.stdlib_documents(os.path.join(stdlib_dir, package))
             for first, second in zip(document, document[1:])
             if len(second.split(" ")) > SWAG_START_WORDS + 2]
    # Sorted: the same sample from the same seed (a set's order varies between processes).
    rests = sorted({" ".join(words[SWAG_START_WORDS:]) for _, words in pairs})
    for first, words in pairs:
      right = " ".join(words[SWAG_START_WORDS:])
      wrong = rng.sample([r for r in rests if r != right], 3)  # Three distinct wrong endings.
      label = rng.randrange(4)
      endings = wrong[:label] + [right] + wrong[label:]
      rows.append([first, " ".join(words[:SWAG_START_WORDS]), *endings, label])
  return rows


def write_swag_task(output_dir: str, dev_fraction: float = 0.2, seed: int = 0
                    ) -> dict[str, int]:
  """Shuffles the rows (seeded), writes train.csv and dev.csv; returns their sizes."""
  return _write_splits(output_dir, swag_rows(seed=seed), dev_fraction, seed,
                       ("dev.csv", "train.csv"), _csv_writer(
                           ["sent1", "sent2", "ending0", "ending1", "ending2", "ending3",
                            "label"]))


_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the task's files go.")
_FORMAT = flags.DEFINE_enum("format", "csv", ["csv", "squad", "swag"],
                            "csv: package classification; squad: a cloze SQuAD v1.1 task; "
                            "swag: which ending continues a sentence (SWAG's CSV layout).")


def main(argv: list[str]) -> None:
  del argv
  if _FORMAT.value == "squad":
    sizes = write_squad_task(_OUTPUT_DIR.value)
    print(f"Wrote {sizes['train.json']} training and {sizes['dev.json']} dev questions "
          f"(SQuAD v1.1 format, {', '.join(PACKAGES)}) to {_OUTPUT_DIR.value}")
    return
  if _FORMAT.value == "swag":
    sizes = write_swag_task(_OUTPUT_DIR.value)
    print(f"Wrote {sizes['train.csv']} training and {sizes['dev.csv']} dev questions (SWAG's CSV "
          f"layout, {', '.join(PACKAGES)}) to {_OUTPUT_DIR.value}")
    return
  sizes = write_task(_OUTPUT_DIR.value)
  print(f"Wrote {sizes['train.csv']} training and {sizes['dev.csv']} dev sentences "
        f"({', '.join(PACKAGES)}) to {_OUTPUT_DIR.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("output_dir")
  app.run(main, flags_parser=errors.flags_parser("bert_jax.finetuning.data.example_task"))
