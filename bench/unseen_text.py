"""Text the embedded corpus never saw, as a user brings it: one sentence per line, and labels.

    python -m bench.unseen_text --output_dir=/tmp/scipy_text [--per_label=300]
    python -m bench.unseen_text --source=fortunes --output_dir=/tmp/fortunes_text

Writes, from the docstrings of SciPy (installed with JAX; English prose about statistics,
optimisation, signal processing...; the embedded corpus is the standard library's), or with
--source=fortunes from Debian's `fortunes` package (`apt-get install fortunes`: quotations and
jokes filed by topic, each fortune one line; everyday English, not documentation):
  text.txt      one sentence per line, no blank lines (no document structure), for
                `--config.data.source=text --config.data.input_files=DIR/text.txt`
  labelled.csv  `sentence,label`: --per_label sentences of each of the largest subpackages
                (stats, optimize, signal, ...) or of the fortune files named by --topics,
                labelled with it; none of them is in text.txt,
                so fine-tuning on them is on text that pre-training never saw (with
                --labelled_in_text they are in it too, unlabelled, in their reading order:
                a user's own text, some of whose sentences get labels).

Both are the same on every machine with the same SciPy (the labelled rows drawn with seed 0).
"""

import argparse
import collections
import os
import random

from bench import payoff_tasks
from bert_jax.pretraining.data import corpus

FORTUNES_DIR = "/usr/share/games/fortunes"
# Topical fortune files with 600+ fortunes each; the others are mixed ("fortunes", "cookie"),
# one author's ("zippy", "pratchett") or a format more than a topic ("definitions").
FORTUNE_TOPICS = ("computers", "politics", "science", "work")

# Deprecated copies of other subpackages; private ones (a leading underscore) are not topics
# either.
_NOT_A_TOPIC = frozenset({"misc", "fftpack"})


def is_prose(sentence: str) -> bool:
  """A sentence of 8-30 words that starts like one, without reST headings or code markup."""
  return (8 <= len(sentence.split()) <= 30 and sentence[0].isupper() and "  " not in sentence
          and "---" not in sentence and "===" not in sentence and ">>>" not in sentence
          and not sentence.endswith("::"))


def package_sentences(package_dir: str) -> dict[str, list[str]]:
  """Prose sentences of a package's docstrings by subpackage ('' for its top-level modules),
  in reading order (files sorted), each once."""
  sentences = collections.defaultdict(dict)  # An ordered set.
  for directory, subdirectories, filenames in os.walk(package_dir):
    subdirectories[:] = sorted(d for d in subdirectories if d not in ("tests", "__pycache__"))
    relative = os.path.relpath(directory, package_dir)
    topic = "" if relative == "." else relative.split(os.sep)[0]
    for filename in sorted(filenames):
      if not filename.endswith(".py"):
        continue
      try:
        with open(os.path.join(directory, filename), encoding="utf-8") as f:
          docstrings = corpus.module_docstrings(f.read())
      except (SyntaxError, ValueError, UnicodeDecodeError):
        continue
      sentences[topic].update((s, None) for d in docstrings for s in corpus.split_sentences(d)
                              if is_prose(s))
  return {topic: list(found) for topic, found in sentences.items()}


def fortunes_by_file(directory: str = FORTUNES_DIR) -> dict[str, list[str]]:
  """Each fortune file's fortunes (separated by '%' lines), each on one line, in file order;
  5-60 words, no ASCII art (runs of spaces inside a line)."""
  by_file = {}
  for filename in sorted(os.listdir(directory)):
    path = os.path.join(directory, filename)
    if "." in filename or not os.path.isfile(path):  # .dat indexes, .u8 copies.
      continue
    with open(path, encoding="utf-8", errors="replace") as f:
      fortunes = f.read().split("\n%\n")
    by_file[filename] = list(dict.fromkeys(
        " ".join(f.split()) for f in fortunes
        if 5 <= len(f.split()) <= 60
        and not any("   " in line.strip() for line in f.expandtabs().splitlines())))
  return by_file


def make(by_topic: dict[str, list[str]], topics: list[str], per_label: int, seed: int = 0,
         labelled_in_text: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
  """(pre-training sentences, labelled rows): per_label sentences of each topic, the labelled
  ones left out of the first unless labelled_in_text (a user's own text, a few hundred of whose
  sentences get labels)."""
  # A sentence found in two subpackages would be labelled twice: it is neither.
  seen = collections.Counter(s for t in by_topic for s in by_topic[t])
  rng = random.Random(seed)
  rows = []
  for topic in topics:
    candidates = sorted(s for s in by_topic[topic] if seen[s] == 1)
    rng.shuffle(candidates)
    rows.extend((s, topic) for s in candidates[:per_label])
  rng.shuffle(rows)
  labelled = {s for s, _ in rows}
  # In reading order, as a user's text comes: consecutive lines are consecutive sentences.
  text = list(dict.fromkeys(s for t in sorted(by_topic) for s in by_topic[t]
                            if labelled_in_text or s not in labelled))
  return text, rows


def scipy_topics(by_topic: dict[str, list[str]], num_labels: int) -> list[str]:
  """The num_labels largest public subpackages."""
  return sorted((t for t in by_topic if t and not t.startswith("_") and t not in _NOT_A_TOPIC),
                key=lambda t: (-len(by_topic[t]), t))[:num_labels]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--source", choices=("scipy", "fortunes"), default="scipy")
  parser.add_argument("--topics", default=",".join(FORTUNE_TOPICS),
                      help="--source=fortunes: the fortune files to label")
  parser.add_argument("--per_label", type=int, default=300)
  parser.add_argument("--num_labels", type=int, default=6, help="--source=scipy: subpackages")
  parser.add_argument("--labelled_in_text", action="store_true",
                      help="keep the labelled sentences in text.txt too (unlabelled there)")
  args = parser.parse_args()
  if args.source == "fortunes":
    if not os.path.isdir(FORTUNES_DIR):
      raise SystemExit(f"{FORTUNES_DIR} does not exist: apt-get install fortunes")
    by_topic = fortunes_by_file()
    topics = args.topics.split(",")
    unknown = sorted(set(topics) - set(by_topic))
    if unknown:
      raise SystemExit(f"--topics: no fortune file {', '.join(unknown)} in {FORTUNES_DIR}")
  else:
    import scipy  # pylint: disable=import-outside-toplevel
    by_topic = package_sentences(os.path.dirname(scipy.__file__))
    topics = scipy_topics(by_topic, args.num_labels)
  text, rows = make(by_topic, topics, args.per_label, labelled_in_text=args.labelled_in_text)
  os.makedirs(args.output_dir, exist_ok=True)
  text_path = os.path.join(args.output_dir, "text.txt")
  with open(text_path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(s + "\n" for s in text)
  os.replace(text_path + ".tmp", text_path)
  payoff_tasks.write_csv(os.path.join(args.output_dir, "labelled.csv"), rows)
  counts = collections.Counter(label for _, label in rows)
  print(f"{args.output_dir}/text.txt: {len(text)} sentences, "
        f"{sum(len(s.split()) for s in text)} words; {args.output_dir}/labelled.csv: "
        f"{len(rows)} rows, {dict(sorted(counts.items()))}")


if __name__ == "__main__":
  main()
