"""Random but realistic pre-training batches: padding, partial predictions, both NSP labels."""

import numpy as np


def random_batch(batch_size: int, max_seq_length: int, max_predictions_per_seq: int,
                 vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A batch with the original's feature names, deterministic in `seed`.

  Each row has a random real length (the rest padding) and a random number of real masked
  positions (the rest zero-weighted padding), so tests see the masks that real batches have.
  """
  rng = np.random.default_rng(seed)
  shape = (batch_size, max_seq_length)
  lengths = rng.integers(max_seq_length // 2, max_seq_length + 1, batch_size)
  input_mask = (np.arange(max_seq_length)[None] < lengths[:, None]).astype(np.int32)
  input_ids = rng.integers(5, vocab_size, shape).astype(np.int32) * input_mask
  segment_ids = (np.arange(max_seq_length)[None] >= lengths[:, None] // 2).astype(np.int32)
  segment_ids *= input_mask
  positions = np.zeros((batch_size, max_predictions_per_seq), np.int32)
  weights = np.zeros((batch_size, max_predictions_per_seq), np.float32)
  for row, length in enumerate(lengths):
    count = rng.integers(1, max_predictions_per_seq + 1)
    positions[row, :count] = np.sort(rng.choice(np.arange(1, length), count, replace=False))
    weights[row, :count] = 1.0
  return {
      "input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
      "masked_lm_positions": positions,
      "masked_lm_ids": np.take_along_axis(input_ids, positions, 1) * (weights > 0),
      "masked_lm_weights": weights,
      "next_sentence_labels": rng.integers(0, 2, batch_size).astype(np.int32),
  }
