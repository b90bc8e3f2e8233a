"""WordPiece throughput: the original's pure-Python path vs our `tokenizers` fast path.

    python -m bench.tokenization [--repeats=3] [--vocab_size=20000]     (from the repo root)

Builds a Google-layout WordPiece vocabulary ([PAD]=0, [unused*], [UNK] [CLS] [SEP] [MASK] at
100-103) from the embedded corpus (the standard library's docstrings), then encodes every
sentence of the corpus: pure Python in this process, the fast path in child processes on one
thread and on all cores (rayon reads RAYON_NUM_THREADS once per process, so each count gets a
fresh one). Reports words/s (whitespace-separated words of the raw text) and checks that every
path gives the same ids.
"""

import argparse
import collections
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

from bert_jax.pretraining.data import corpus
from bert_jax.tokenizers import wordpiece

_NUM_UNUSED = 99  # Google's vocab.txt: [PAD], [unused0..98], then [UNK] at 100.


def build_vocab(sentences: list[str], vocab_size: int) -> list[str]:
  """A deterministic uncased vocabulary: specials, every character, frequent words and tails."""
  basic_tokenizer = wordpiece.BasicTokenizer(do_lower_case=True)
  word_counts = collections.Counter(
      word for sentence in sentences for word in basic_tokenizer.tokenize(sentence))
  chars = sorted({char for word in word_counts for char in word})
  tokens = (["[PAD]"] + [f"[unused{i}]" for i in range(_NUM_UNUSED)] +
            ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{char}" for char in chars])
  # Word tails ('##ing', '##s' ...) weighted by the counts of the words they end.
  tail_counts = collections.Counter()
  for word, count in word_counts.items():
    for start in range(1, min(len(word), 6)):
      tail_counts["##" + word[start:]] += count
  seen = set(tokens)
  frequent = sorted(word_counts.items(), key=lambda item: (-item[1], item[0]))
  frequent_tails = sorted(tail_counts.items(), key=lambda item: (-item[1], item[0]))
  num_tails = (vocab_size - len(tokens)) // 4
  for token, _ in frequent_tails[:num_tails] + frequent:
    if len(tokens) >= vocab_size:
      break
    if token not in seen:
      seen.add(token)
      tokens.append(token)
  return tokens


def _time_encoding(tokenizer: wordpiece.FullTokenizer, sentences: list[str],
                   repeats: int) -> tuple[float, str]:
  """Best seconds of `repeats` encodings of all sentences (after one untimed), and an id hash."""
  ids = tokenizer.encode_batch(sentences)  # Warms up: characters checked, threads started.
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    ids = tokenizer.encode_batch(sentences)
    best = min(best, time.perf_counter() - start)
  digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
  return best, digest


def _child(vocab_file: str, sentences_file: str, repeats: int) -> None:
  with open(sentences_file) as f:
    sentences = json.load(f)
  tokenizer = wordpiece.FullTokenizer(vocab_file, do_lower_case=True)
  assert tokenizer.uses_fast_path, "tokenizers is not installed"
  seconds, digest = _time_encoding(tokenizer, sentences, repeats)
  print(json.dumps({"seconds": seconds, "digest": digest}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--vocab_size", type=int, default=20_000)
  parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(*args.child, args.repeats)
    return

  sentences = [sentence for document in corpus.stdlib_documents() for sentence in document]
  num_words = sum(len(sentence.split()) for sentence in sentences)
  with tempfile.TemporaryDirectory() as scratch_dir:
    vocab_file = os.path.join(scratch_dir, "vocab.txt")
    with open(vocab_file, "w") as f:
      f.write("\n".join(build_vocab(sentences, args.vocab_size)) + "\n")
    sentences_file = os.path.join(scratch_dir, "sentences.json")
    with open(sentences_file, "w") as f:
      json.dump(sentences, f)
    print(f"{len(sentences)} sentences, {num_words} words, vocab {args.vocab_size}, "
          f"{os.cpu_count()} cores")

    slow = wordpiece.FullTokenizer(vocab_file, do_lower_case=True, use_fast_path=False)
    seconds, reference_digest = _time_encoding(slow, sentences, args.repeats)
    print(f"pure Python (original algorithm): {num_words / seconds:12,.0f} words/s")

    for label, threads in (("fast path, 1 thread", "1"),
                           (f"fast path, {os.cpu_count()} threads", str(os.cpu_count()))):
      env = dict(os.environ, RAYON_NUM_THREADS=threads)
      result = subprocess.run(
          [sys.executable, "-m", "bench.tokenization", f"--repeats={args.repeats}",
           "--child", vocab_file, sentences_file],
          env=env, check=True, capture_output=True, text=True)
      child = json.loads(result.stdout.strip().splitlines()[-1])
      same = "ids identical" if child["digest"] == reference_digest else "IDS DIFFER"
      print(f"{label + ':':33s} {num_words / child['seconds']:12,.0f} words/s  ({same})")


if __name__ == "__main__":
  main()
