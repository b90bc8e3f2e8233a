"""Where a checkpoint's vocabulary is: the vocabulary is not in the weights, but beside them.

Fine-tuning from a checkpoint and exporting it both need the vocabulary it was trained with;
`beside_checkpoint` finds it by the places bert_jax and the originals keep it.
"""

import json
import os

import tensorflow as tf


def beside_checkpoint(path: str) -> str | None:
  """The vocabulary kept with the checkpoint at `path`, or None.

  Looked for, in order: `path/vocab.txt` (HF and Google's downloads), `vocab.txt` beside a TF
  checkpoint prefix, `path/vocab.model` (bert_jax's exports), and the data directory of a
  bert_jax pre-training workdir (`path/data/metadata.json`, also from `path` =
  WORKDIR/checkpoints/<step>), whose vocab_file is relative to that directory.
  """
  path = path.rstrip("/")
  if not path:
    return None
  candidates = [os.path.join(path, "vocab.txt"), os.path.join(os.path.dirname(path), "vocab.txt"),
                os.path.join(path, "vocab.model"), os.path.join(path, "data", "metadata.json")]
  if os.path.basename(os.path.dirname(path)) == "checkpoints":  # WORKDIR/checkpoints/<step>
    candidates.append(os.path.join(os.path.dirname(os.path.dirname(path)), "data",
                                   "metadata.json"))
  for candidate in candidates:
    if not tf.io.gfile.exists(candidate):
      continue
    if not candidate.endswith("metadata.json"):
      return candidate
    with tf.io.gfile.GFile(candidate) as f:  # A bert_jax workdir's prepared data.
      vocab_file = json.load(f).get("vocab_file")
    if vocab_file and "://" not in vocab_file and not os.path.isabs(vocab_file):
      vocab_file = os.path.join(os.path.dirname(candidate), vocab_file)
    if vocab_file:
      return vocab_file
  return None
