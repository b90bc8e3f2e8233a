"""Statistics of the pre-training data recipe: each phase's pairs, and the whole-word quota.

    python -m bench.data_recipe --vocab_file=VOCAB [--input_file='corpus/*.txt'] \
        [--output_dir=/tmp/data_recipe] [--dupe_factor=5]

Prepares the text (default: the embedded corpus) three ways from the same documents: at 128
and 512 in one pass (what a two-phase run reads), and at 512 alone, the old way's data set,
which phase 1 read cut to 128. For each, over the batches a phase reads (one pass, unshuffled):
instances, share of pairs whose segment A is longer than B, mean A and B lengths, share of
full-length instances, share of random-next pairs. Then, with whole-word masking at 15%, the
share of sequences masked below their quota and of those with a word joined across [SEP].
No timing: these are the figures to compare with google-research/bert's
create_pretraining_data.py on the same text.
"""

import argparse
import os

import numpy as np

from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import pipeline
from bert_jax.pretraining.data import prepare


def _batches(files, length, masking_config):
  """One unshuffled pass over the batches a phase at `length` reads from `files`."""
  yield from pipeline.pretraining_dataset(
      files, batch_size=16, max_seq_length=length, masking_config=masking_config, seed=0,
      is_training=False).as_numpy_iterator()


def pair_statistics(files, length: int, masking_config: masking.MaskingConfig
                    ) -> dict[str, float]:
  """Segment lengths, full-length share and random-next share of the pairs read."""
  rows = {"input_mask": [], "segment_ids": [], "next_sentence_labels": []}
  for batch in _batches(files, length, masking_config):
    for name, values in rows.items():
      values.append(batch[name])
  mask, segments, random_next = (np.concatenate(rows[name]) for name in rows)
  length_a = ((segments == 0) & (mask == 1)).sum(1) - 2  # [CLS] A [SEP]
  length_b = segments.sum(1) - 1  # B [SEP]
  return {"instances": len(mask), "a_longer": float(np.mean(length_a > length_b)),
          "mean_a": float(length_a.mean()), "mean_b": float(length_b.mean()),
          "full_length": float(np.mean(mask.sum(1) == length)),
          "random_next": float(random_next.mean())}


def quota_statistics(files, length: int, masking_config: masking.MaskingConfig,
                     sep_id: int) -> dict[str, float]:
  """Whole-word masking: share of sequences masked below their quota, and of those with a
  masked word on both sides of a [SEP] (a piece after [SEP] joined to segment A's last word)."""
  short = joined = total = 0
  for batch in _batches(files, length, masking_config):
    for row in range(len(batch["input_mask"])):
      num_tokens = int(batch["input_mask"][row].sum())
      quota = min(masking_config.max_predictions_per_seq,
                  max(1, round(num_tokens * masking_config.masked_lm_prob)))
      positions = batch["masked_lm_positions"][row][batch["masked_lm_weights"][row] > 0]
      short += len(positions) < quota
      original = batch["input_ids"][row].copy()
      original[positions] = batch["masked_lm_ids"][row][:len(positions)]
      separators = np.flatnonzero(original[:num_tokens] == sep_id)[:-1]
      # A masked piece right after [SEP] whose word began before it.
      joined += any(s + 1 in positions and s - 1 in positions
                    and not masking_config.word_starts[original[s + 1]] for s in separators)
      total += 1
  return {"sequences": total, "below_quota": short / total, "joined_across_sep": joined / total}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab_file", required=True)
  parser.add_argument("--input_file", default="", help="default: the embedded corpus")
  parser.add_argument("--output_dir", default="/tmp/data_recipe")
  parser.add_argument("--dupe_factor", type=int, default=5)
  args = parser.parse_args()
  loader = prepare.TokenizerLoader(args.vocab_file)
  tokenizer = loader()

  def documents():
    if args.input_file:
      return corpus.text_file_documents(args.input_file)
    return corpus.stdlib_documents()

  common = dict(short_seq_prob=0.1, dupe_factor=args.dupe_factor, num_eval_documents=0,
                seed=12345, progress_interval_s=None)
  both = prepare.prepare_pretraining_data(documents(), loader,
                                          os.path.join(args.output_dir, "both"),
                                          max_seq_length=128, extra_seq_lengths=(512,), **common)
  alone = prepare.prepare_pretraining_data(documents(), loader,
                                           os.path.join(args.output_dir, "512"),
                                           max_seq_length=512, **common)
  masking_config = masking.MaskingConfig(
      vocab_size=tokenizer.vocab_size, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
      mask_id=tokenizer.mask_id, special_ids=tuple(tokenizer.special_ids),
      max_predictions_per_seq=20, whole_word_masking=True, word_starts=tokenizer.word_starts())
  rows = [("phase 1: made at 128", both["train_files"], 128),
          ("phase 1, the old way: made at 512, cut to 128", alone["train_files"], 128),
          ("phase 2: made at 512", both["extra_lengths"][0]["train_files"], 512)]
  print("| data | instances | A longer than B | mean A | mean B | full length | random next |")
  print("|---|---|---|---|---|---|---|")
  for name, files, length in rows:
    stats = pair_statistics(files, length, masking_config)
    print(f"| {name} | {stats['instances']} | {stats['a_longer']:.1%} | {stats['mean_a']:.1f} "
          f"| {stats['mean_b']:.1f} | {stats['full_length']:.1%} | {stats['random_next']:.1%} |")
  quota = quota_statistics(both["train_files"], 128, masking_config, tokenizer.sep_id)
  print(f"\nwhole-word masking at 15%, seq 128: {quota['sequences']} sequences, "
        f"{quota['below_quota']:.2%} masked below their quota, {quota['joined_across_sep']:.2%} "
        f"with a word masked across [SEP] ({os.path.basename(args.vocab_file)}, "
        f"{type(tokenizer).__name__})")


if __name__ == "__main__":
  main()
