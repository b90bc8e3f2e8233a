"""A small labelled task made from the embedded corpus: which package a docstring sentence is from.

    python -m bert_jax.data.example_task --output_dir=DIR

Writes DIR/train.csv and DIR/dev.csv (columns `sentence,label`; labels asyncio, email, unittest,
xml), from this Python's standard library: a real classification task with no download, to try
fine-tuning end to end on a laptop (README, "Fine-tuning").
"""

import csv
import os
import random
import sysconfig

from absl import app
from absl import flags

from bert_jax import errors
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


def write_task(output_dir: str, dev_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
  """Shuffles the sentences (seeded) and writes train.csv and dev.csv; returns their sizes."""
  rows = labelled_sentences()
  random.Random(seed).shuffle(rows)
  num_dev = int(len(rows) * dev_fraction)
  os.makedirs(output_dir, exist_ok=True)
  sizes = {}
  for name, part in (("dev.csv", rows[:num_dev]), ("train.csv", rows[num_dev:])):
    with open(os.path.join(output_dir, name), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["sentence", "label"])
      writer.writerows(part)
    sizes[name] = len(part)
  return sizes


_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where train.csv and dev.csv go.")


def main(argv: list[str]) -> None:
  del argv
  sizes = write_task(_OUTPUT_DIR.value)
  print(f"Wrote {sizes['train.csv']} training and {sizes['dev.csv']} dev sentences "
        f"({', '.join(PACKAGES)}) to {_OUTPUT_DIR.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("output_dir")
  app.run(main, flags_parser=errors.flags_parser("bert_jax.data.example_task"))
