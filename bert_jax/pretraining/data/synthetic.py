"""Random but realistic pre-training batches, for tests and benchmarks (no data needed).

Each row has a random real length (the rest padding), a random number of real masked
positions (the rest zero-weighted padding) and both NSP labels occur: the masks real batches
have, with the original BERT's feature names.
"""

import numpy as np


def random_batch(batch_size: int, max_seq_length: int, max_predictions_per_seq: int,
                 vocab_size: int, seed: int = 0, *, min_predictions: int = 1,
                 first_id: int = 5, mask_id: int | None = None) -> dict[str, np.ndarray]:
  """A batch deterministic in `seed`.

  Args:
    min_predictions: Fewest real predictions in a row.
    first_id: Smallest token id drawn (ids below it are left to special tokens).
    mask_id: When given, the input ids at the real masked positions become it, as in training.
  """
  rng = np.random.default_rng(seed)
  shape = (batch_size, max_seq_length)
  lengths = rng.integers(max_seq_length // 2, max_seq_length + 1, batch_size)
  input_mask = (np.arange(max_seq_length)[None] < lengths[:, None]).astype(np.int32)
  original_ids = rng.integers(first_id, vocab_size, shape).astype(np.int32) * input_mask
  segment_ids = (np.arange(max_seq_length)[None] >= lengths[:, None] // 2).astype(np.int32)
  segment_ids *= input_mask
  positions = np.zeros((batch_size, max_predictions_per_seq), np.int32)
  weights = np.zeros((batch_size, max_predictions_per_seq), np.float32)
  for row, length in enumerate(lengths):
    count = rng.integers(min_predictions, max_predictions_per_seq + 1)
    positions[row, :count] = np.sort(rng.choice(np.arange(1, length), count, replace=False))
    weights[row, :count] = 1.0
  input_ids = original_ids
  if mask_id is not None:
    input_ids = original_ids.copy()
    rows = np.repeat(np.arange(batch_size), max_predictions_per_seq)
    real = weights.reshape(-1) > 0
    input_ids[rows[real], positions.reshape(-1)[real]] = mask_id
  return {
      "input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
      "masked_lm_positions": positions,
      "masked_lm_ids": np.take_along_axis(original_ids, positions, 1) * (weights > 0),
      "masked_lm_weights": weights,
      "next_sentence_labels": rng.integers(0, 2, batch_size).astype(np.int32),
  }
