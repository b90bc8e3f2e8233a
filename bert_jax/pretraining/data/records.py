"""Serialized tf.train.Example bytes of pre-training instances, encoded by hand.

Building tf.train.Example protos through the protobuf Python API costs more than creating the
instance; these four int64 list features are simple enough to write as protobuf wire bytes
directly (tests/test_prepare.py checks they parse with tf.io.parse_single_example to the same
values a tf.train.Example gives):

  Example       { Features features = 1; }
  Features      { map<string, Feature> feature = 1; }   a map entry: key = 1, value = 2
  Feature       { Int64List int64_list = 3; }
  Int64List     { repeated int64 value = 1 [packed = true]; }

Features are written in the order input_ids, input_mask, segment_ids, next_sentence_labels.
"""

from bert_jax.pretraining.data import instances as instances_lib

# Wire tags: (field number << 3) | wire type 2 (length-delimited).
_TAG_1 = b"\x0a"
_TAG_2 = b"\x12"
_TAG_3 = b"\x1a"


def varint(value: int) -> bytes:
  """Protobuf base-128 varint of a non-negative integer."""
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


# Ids below 2**16 (every vocabulary BERT uses but the largest SentencePiece ones) are looked
# up, not encoded: 2.5 MB once, and the per-token cost of serialization becomes a list index.
_VARINT_TABLE = [varint(i) for i in range(1 << 16)]


def _packed_ids(ids: list[int]) -> bytes:
  try:
    return b"".join([_VARINT_TABLE[i] for i in ids])
  except IndexError:
    return b"".join([varint(i) for i in ids])


def _delimited(tag: bytes, payload: bytes) -> bytes:
  return tag + varint(len(payload)) + payload


def _feature_entry(name: bytes, packed_values: bytes) -> bytes:
  """One entry of the Features map: name -> Feature{int64_list{value: ...}}."""
  feature = _delimited(_TAG_3, _delimited(_TAG_1, packed_values))
  return _delimited(_TAG_1, _delimited(_TAG_1, name) + _delimited(_TAG_2, feature))


_NSP_LABELS = (_feature_entry(b"next_sentence_labels", b"\x00"),
               _feature_entry(b"next_sentence_labels", b"\x01"))


def encode_instance(instance: instances_lib.Instance, max_seq_length: int,
                    pad_id: int) -> bytes:
  """The serialized tf.train.Example of one instance, padded to max_seq_length.

  Args:
    instance: The instance; at most max_seq_length tokens.
    max_seq_length: Length of input_ids, input_mask and segment_ids.
    pad_id: Id of [PAD], filling input_ids after the tokens.

  Returns:
    Bytes that tf.train.Example.FromString and tf.io.parse_single_example read as input_ids,
    input_mask, segment_ids (int64 [max_seq_length]) and next_sentence_labels (int64 [1]).
  """
  tokens = instance.tokens
  length = len(tokens)
  num_padding = max_seq_length - length
  num_a = instance.num_segment_a_tokens
  # 0 and 1 are one-byte varints: the packed lists of masks and segments are plain bytes.
  features = (
      _feature_entry(b"input_ids", _packed_ids(tokens) + _packed_ids([pad_id]) * num_padding) +
      _feature_entry(b"input_mask", b"\x01" * length + b"\x00" * num_padding) +
      _feature_entry(b"segment_ids",
                     b"\x00" * num_a + b"\x01" * (length - num_a) + b"\x00" * num_padding) +
      _NSP_LABELS[instance.is_random_next])
  return _delimited(_TAG_1, features)
