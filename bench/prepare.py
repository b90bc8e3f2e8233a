"""Throughput and peak memory of pre-training data preparation (bert_jax/pretraining/data/prepare.py).

    python bench/prepare.py                       # ~4 MB corpus, 1 worker and all cores
    python bench/prepare.py --copies=3 --documents_per_shard=200 --vocab_size=8000

The corpus is the embedded one (the standard library's docstrings) written `copies` times in
the original text format; the vocabulary a SentencePiece model trained on it. Each setting
runs in a fresh process, so that its peak memory (ru_maxrss of the process and of its worker
processes) is its own. Throughput counts the whole prepare call (reading, tokenizing, instance
creation, writing, pool start-up), not the interpreter's start-up.

Reference on the 2-core development machine: google-research/bert's create_pretraining_data.py
at these settings, ~28k input words/s (~1.9k instances/s) on one core, 815 MB peak for 4 MB.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _write_corpus(directory: str, copies: int) -> tuple[str, int, int]:
  from bert_jax.pretraining.data import corpus  # pylint: disable=import-outside-toplevel
  documents = corpus.stdlib_documents()
  text = "".join("\n".join(document) + "\n\n" for document in documents)
  for copy in range(copies):
    with open(os.path.join(directory, f"corpus-{copy}.txt"), "w") as f:
      f.write(text)
  num_words = sum(len(sentence.split()) for document in documents for sentence in document)
  return os.path.join(directory, "corpus-*.txt"), num_words * copies, len(text.encode()) * copies


def _measure(args: argparse.Namespace) -> None:
  """Child mode: one prepare call; prints its figures as JSON."""
  from bert_jax.pretraining.data import corpus  # pylint: disable=import-outside-toplevel
  from bert_jax.pretraining.data import prepare  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  metadata = prepare.prepare_pretraining_data(
      corpus.text_file_documents(args.input_file), prepare.TokenizerLoader(args.vocab_file),
      args.output_dir, max_seq_length=128, short_seq_prob=0.1, dupe_factor=5,
      num_eval_documents=100, seed=12345, documents_per_shard=args.documents_per_shard,
      num_workers=args.num_workers, progress_interval_s=None)
  elapsed = time.perf_counter() - start
  print(json.dumps({
      "seconds": elapsed,
      "instances": metadata["num_train_instances"] + metadata["num_eval_instances"],
      "files": len(metadata["train_files"]),
      # Linux reports ru_maxrss in KiB.
      "self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
  }))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--copies", type=int, default=3, help="Times the corpus is written.")
  parser.add_argument("--documents_per_shard", type=int, default=200)
  parser.add_argument("--vocab_size", type=int, default=8000)
  parser.add_argument("--workers", default=f"1,{os.cpu_count()}",
                      help="Comma-separated numbers of worker processes to measure.")
  parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--input_file", help=argparse.SUPPRESS)
  parser.add_argument("--vocab_file", help=argparse.SUPPRESS)
  parser.add_argument("--output_dir", help=argparse.SUPPRESS)
  parser.add_argument("--num_workers", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    _measure(args)
    return

  from bert_jax.tokenizers import tokenization  # pylint: disable=import-outside-toplevel
  from bert_jax.pretraining.data import corpus  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as directory:
    pattern, num_words, num_bytes = _write_corpus(directory, args.copies)
    vocab_file = tokenization.train_sentencepiece(
        (s for document in corpus.stdlib_documents() for s in document),
        vocab_size=args.vocab_size, model_prefix=os.path.join(directory, "spm"),
        input_sentence_size=200_000)
    print(f"corpus: {num_bytes / 1e6:.1f} MB, {num_words} words; max_seq_length 128, "
          f"dupe_factor 5, documents_per_shard {args.documents_per_shard}, "
          f"vocab {vocab_file} ({args.vocab_size} pieces)")
    for num_workers in (int(w) for w in args.workers.split(",")):
      output = subprocess.run(
          [sys.executable, __file__, "--measure", f"--input_file={pattern}",
           f"--vocab_file={vocab_file}", f"--output_dir={directory}/out-{num_workers}",
           f"--documents_per_shard={args.documents_per_shard}",
           f"--num_workers={num_workers}"],
          capture_output=True, text=True, check=False)
      if output.returncode:
        sys.exit(output.stderr[-3000:])
      result = json.loads(output.stdout.strip().splitlines()[-1])
      print(f"workers {num_workers}: {result['seconds']:.1f} s, "
            f"{num_words / result['seconds']:,.0f} input words/s, "
            f"{result['instances'] / result['seconds']:,.0f} instances/s "
            f"({result['instances']} instances, {result['files']} files); peak RSS "
            f"{result['self_mb']:.0f} MB main process, {result['children_mb']:.0f} MB largest "
            f"worker", flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
