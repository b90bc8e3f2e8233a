"""Packed rows: several short examples in one row of max_seq_length, so no compute is spent on
padding (`data.packing`).

A sentiment sentence is ~25 tokens: at max_seq_length 64 half of every unpacked row is padding,
at 128 three quarters. Packed, each example keeps its own [CLS] ... [SEP], its token types, and
positions that restart at 0; `example_ids` (1, 2, ... within a row, 0 for padding) make the
attention block-diagonal, so no token attends across examples and every example's outputs
equal the unpacked model's (tests/test_packing.py). The heads read each example's own [CLS]
(`cls_positions`) or its own tokens; SQuAD's span softmax runs over each window's own tokens
(heads.span_loss), so its windows pack too (a window of a short context is mostly padding).

Rows are filled best-fit decreasing: the longest example first, each into the fullest row it
still fits. The packing is fixed for a data set; training shuffles the rows every epoch.

How `train.batch_size` maps to rows: a step takes a fixed number of rows, enough that
train.batch_size examples are seen per step on average (`rows_per_step`). Steps, epochs and the
learning-rate schedule are counted in examples as before: an epoch is still
num_examples / batch_size steps, and the loss is the mean over the examples of the step.
"""

import dataclasses
import math

import numpy as np

# A row's example slots: its [CLS] positions, labels and weights have this many columns. Rows
# hold at most this many examples (3-token examples at length 128 could fill 42).
MAX_EXAMPLES_PER_ROW = 32
# Features holding one value per token, moved with their tokens.
_TOKEN_KEYS = ("input_ids", "segment_ids", "label_ids", "label_weights")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a task family's examples sit in packed rows (its record's `packing`).

  Attributes:
    slots: Each example has a slot of its row: its [CLS] position (`cls_positions`), its label
      and weight, its answer's columns ([rows, slots] each). Token tagging's labels stay on
      their tokens instead.
    per_token: The model's outputs are per token ([rows, length, ...]), not per slot.
  """
  slots: bool = True
  per_token: bool = False


TEXT = Layout()  # Classification, regression, and unlabelled text (encode).
TAGS = Layout(slots=False, per_token=True)  # A tag per token.
SPANS = Layout(per_token=True)  # An answer's start and end columns per window.


@dataclasses.dataclass(frozen=True)
class Packed:
  """Examples packed into rows, and where each example went.

  Attributes:
    features: input_ids, input_mask, segment_ids, position_ids, example_ids: int32 [rows,
      length]; for text tasks cls_positions [rows, slots] and, when labelled, label_ids and
      weights [rows, slots] (weight 0: an empty slot); for token tasks label_ids and
      label_weights [rows, length].
    row, slot, start, length: int [examples]: the row of each example, its slot there (its
      example id - 1), its first token's column and its number of tokens.
  """
  features: dict[str, np.ndarray]
  row: np.ndarray
  slot: np.ndarray
  start: np.ndarray
  length: np.ndarray

  @property
  def num_rows(self) -> int:
    return len(self.features["input_ids"])

  def padding_fraction(self) -> float:
    return 1.0 - float(self.length.sum()) / self.features["input_ids"].size


def assign_rows(lengths: np.ndarray, max_seq_length: int,
                max_per_row: int = MAX_EXAMPLES_PER_ROW) -> tuple[np.ndarray, np.ndarray]:
  """Best-fit decreasing: (row, slot) of each example, rows numbered from 0.

  Args:
    lengths: int [examples], each in [1, max_seq_length].
    max_seq_length: Tokens per row.
    max_per_row: Most examples in one row.
  """
  rows = np.empty(len(lengths), np.int64)
  slots = np.empty(len(lengths), np.int64)
  # Open rows by the room they have left: open_rows[room] is a stack of row numbers.
  open_rows: list[list[int]] = [[] for _ in range(max_seq_length + 1)]
  has_room = np.zeros(max_seq_length + 1, bool)
  room_of, count_of = [], []
  for example in np.argsort(-lengths, kind="stable"):
    length = int(lengths[example])
    fits = np.flatnonzero(has_room[length:])
    if fits.size:  # The fullest row that still fits it.
      room = length + int(fits[0])
      row = open_rows[room].pop()
      has_room[room] = bool(open_rows[room])
    else:
      row = len(room_of)
      room_of.append(max_seq_length)
      count_of.append(0)
    rows[example], slots[example] = row, count_of[row]
    room_of[row] -= length
    count_of[row] += 1
    if count_of[row] < max_per_row and room_of[row] > 0:
      open_rows[room_of[row]].append(row)
      has_room[room_of[row]] = True
  return rows, slots


def pack(features: dict[str, np.ndarray], layout: Layout = TEXT) -> Packed:
  """Packs unpacked features (featurize.py's, one example per row, real tokens first).

  Args:
    features: input_ids, input_mask, segment_ids [examples, length]; label_ids [examples]
      (text tasks), label_ids and label_weights [examples, length] (token tasks) or
      start_positions and end_positions [examples] (spans), if any.
    layout: The family's layout (TEXT, TAGS, SPANS).

  Returns:
    The packed rows; `unpack` maps their outputs back to the examples.
  """
  input_ids = features["input_ids"]
  num_examples, max_seq_length = input_ids.shape
  length = features["input_mask"].sum(axis=1).astype(np.int64)
  # An empty example (no token at all) cannot occur: featurize always writes [CLS] and [SEP].
  row, slot = assign_rows(np.maximum(length, 1), max_seq_length)
  num_rows = int(row.max()) + 1 if num_examples else 0
  # Each example's first column: the lengths of the examples before it in its row.
  order = np.lexsort((slot, row))  # By row, then slot.
  ends = np.cumsum(length[order])
  row_starts = np.zeros(num_rows + 1, np.int64)
  np.add.at(row_starts, row + 1, length)
  start = np.empty(num_examples, np.int64)
  start[order] = ends - length[order] - np.cumsum(row_starts)[row[order]]
  token_example, token_within, token_row, token_column = _token_places(row, start, length)

  def scatter(values: np.ndarray) -> np.ndarray:
    packed = np.zeros((num_rows, max_seq_length), values.dtype)
    packed[token_row, token_column] = values[token_example, token_within]
    return packed

  packed = {key: scatter(features[key]) for key in _TOKEN_KEYS
            if key in features and features[key].ndim == 2}
  packed["input_mask"] = scatter(np.ones_like(features["input_mask"]))
  packed["position_ids"] = scatter(np.broadcast_to(
      np.arange(max_seq_length, dtype=np.int32), input_ids.shape))
  packed["example_ids"] = scatter(np.broadcast_to(
      (slot + 1).astype(np.int32)[:, None], input_ids.shape))
  if layout.slots:
    slots = int(slot.max()) + 1 if num_examples else 1
    packed["cls_positions"] = np.zeros((num_rows, slots), np.int32)
    packed["cls_positions"][row, slot] = start
    if "label_ids" in features and features["label_ids"].ndim == 1:
      packed["label_ids"] = np.zeros((num_rows, slots), features["label_ids"].dtype)
      packed["label_ids"][row, slot] = features["label_ids"]
    for key in ("start_positions", "end_positions"):  # Token columns within the row.
      if key in features:
        packed[key] = np.zeros((num_rows, slots), np.int32)
        packed[key][row, slot] = start + features[key]
    packed["weights"] = np.zeros((num_rows, slots), np.float32)
    packed["weights"][row, slot] = 1.0
  return Packed(packed, row, slot, start, length)


def _token_places(row: np.ndarray, start: np.ndarray, length: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Every real token, [tokens] each: its example and column there, its row and column there."""
  token_example = np.repeat(np.arange(len(length)), length)
  token_within = np.arange(len(token_example)) - np.repeat(np.cumsum(length) - length, length)
  return token_example, token_within, row[token_example], start[token_example] + token_within


def unpack(outputs, packed: Packed, layout: Layout = TEXT):
  """The packed rows' model outputs, one per example again (a pytree of arrays).

  Text tasks: [rows, slots, ...] -> [examples, ...]. Token tasks and spans: [rows, length, ...]
  -> [examples, length, ...], each example's tokens from column 0, as unpacked outputs are (the
  columns past an example's length are zero).
  """
  if not layout.per_token:
    return _map(lambda x: np.asarray(x)[packed.row, packed.slot], outputs)
  token_example, token_within, token_row, token_column = _token_places(
      packed.row, packed.start, packed.length)

  def gather(x):
    x = np.asarray(x)
    out = np.zeros((len(packed.length),) + x.shape[1:], x.dtype)
    out[token_example, token_within] = x[token_row, token_column]
    return out
  return _map(gather, outputs)


def _map(fn, outputs):
  """fn over the arrays of a model's outputs: an array, a tuple of them or a dict of them."""
  if isinstance(outputs, dict):
    return {key: fn(value) for key, value in outputs.items()}
  if isinstance(outputs, tuple):
    return tuple(fn(value) for value in outputs)
  return fn(outputs)


def rows_per_step(batch_size: int, packed: Packed, multiple: int) -> int:
  """Rows a training step takes so that batch_size examples are seen per step on average,
  rounded up to a multiple of the data-parallel devices (each takes whole rows)."""
  examples_per_row = len(packed.row) / max(packed.num_rows, 1)
  rows = math.ceil(batch_size / examples_per_row)
  return max(multiple, -(-rows // multiple) * multiple)
