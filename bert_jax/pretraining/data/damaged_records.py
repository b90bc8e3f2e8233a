"""Damaged TFRecord files: files that are not TFRecords at all, found before training;
records damaged in the middle, where they are; and a reader that goes past them.

A TFRecord file is a run of records, each [length: 8 bytes][masked CRC-32C of the length: 4]
[data: length bytes][masked CRC-32C of the data: 4]. tf.data stops at the first record whose
checksums do not match ("corrupted record at N"), without naming the file, and its
ignore_errors() drops the rest of that file. `scan` walks a file record by record instead: a
record whose data is damaged is skipped by its length; after a damaged length (or a cut in the
middle of the file) the walk looks for the next offset where a whole record checks out. So
only the damaged bytes are lost, and each is reported by its offset.
"""

from collections.abc import Iterator, Sequence
import concurrent.futures
import dataclasses

import google_crc32c
import tensorflow as tf

from bert_jax import errors

_HEADER_BYTES = 12  # The length and its checksum.
_FOOTER_BYTES = 4  # The data's checksum.
# Files scanned at once (gs:// reads are slow, not busy); each is held whole while scanned.
_SCAN_THREADS = 4
# Files whose first bytes are read at once when checking them.
_HEADER_CHECK_THREADS = 16


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masking of its CRCs (tensorflow/core/lib/hash/crc32c.h)."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class FileDamage:
  """What `scan` found in one file.

  Attributes:
    path: The file.
    damaged: Byte ranges [start, end) that hold no readable record, in order: one damaged
      record each, or the bytes up to the next record that checks out.
    good_records: The records that read.
  """
  path: str
  damaged: tuple[tuple[int, int], ...]
  good_records: int


def _length_at(data: bytes | memoryview, offset: int) -> int | None:
  """The length in the record header at `offset`, if the header is whole and its checksum
  matches; None otherwise."""
  header = data[offset:offset + _HEADER_BYTES]
  if len(header) < _HEADER_BYTES:
    return None
  if int.from_bytes(header[8:], "little") != masked_crc32c(bytes(header[:8])):
    return None
  return int.from_bytes(header[:8], "little")


def _record_at(data: bytes | memoryview, offset: int) -> int | None:
  """The offset after a whole, intact record starting at `offset`; None if there is none."""
  length = _length_at(data, offset)
  if length is None:
    return None
  end = offset + _HEADER_BYTES + length + _FOOTER_BYTES
  if end > len(data):
    return None
  body = data[offset + _HEADER_BYTES:end - _FOOTER_BYTES]
  if int.from_bytes(data[end - _FOOTER_BYTES:end], "little") != masked_crc32c(bytes(body)):
    return None
  return end


def tfrecord_header_error(path: str) -> str | None:
  """What is wrong with the first record header of a TFRecord file; None if nothing.

  Reads 12 bytes: the first record's length and that length's checksum. Text, binaries and
  other formats fail it, so a wrong glob is caught before training rather than by tf.data in
  the middle of it. (A file cut short after its first record is not: tf.data silently drops
  a truncated last record.)
  """
  with tf.io.gfile.GFile(path, "rb") as f:
    header = f.read(_HEADER_BYTES)
    size = f.size()
  if not header:
    return None  # No record at all: a valid, empty file.
  if len(header) < _HEADER_BYTES:
    return f"{len(header)} bytes: not a TFRecord file"
  length = _length_at(header, 0)
  if length is None:
    return "not a TFRecord file (its first record header has a wrong checksum)"
  if _HEADER_BYTES + length + _FOOTER_BYTES > size:
    return f"its first record ({length} bytes) runs past the end of the file ({size} bytes)"
  return None


def check_tfrecord_files(files: Sequence[str], field: str) -> None:
  """Every file starts like a TFRecord file (tfrecord_header_error), read in parallel.

  Raises:
    errors.UserError: Naming the field and the first bad file.
  """
  try:
    with concurrent.futures.ThreadPoolExecutor(_HEADER_CHECK_THREADS) as pool:
      problems = list(pool.map(tfrecord_header_error, files))
  except (OSError, tf.errors.OpError) as e:
    raise errors.UserError(f"{field}: cannot read: {e}") from e
  for path, problem in zip(files, problems):
    if problem:
      raise errors.UserError(f"{field}: {path}: {problem}")


def scan(path: str) -> FileDamage:
  """Walks every record of `path`, checking both checksums of each."""
  with tf.io.gfile.GFile(path, "rb") as f:
    data = memoryview(f.read())
  damaged, good, offset = [], 0, 0
  while offset < len(data):
    end = _record_at(data, offset)
    if end is not None:
      good, offset = good + 1, end
      continue
    length = _length_at(data, offset)
    skip_to = offset + _HEADER_BYTES + (length or 0) + _FOOTER_BYTES
    if length is not None and skip_to <= len(data):
      # Only the data is damaged: the length says where the next record starts.
      damaged.append((offset, skip_to))
      offset = skip_to
      continue
    # The length is damaged (or the file cut): the next offset where a whole record checks out.
    resume = next((start for start in range(offset + 1, len(data))
                   if _record_at(data, start) is not None), len(data))
    damaged.append((offset, resume))
    offset = resume
  return FileDamage(path, tuple(damaged), good)


def scan_files(files: Sequence[str]) -> dict[str, FileDamage]:
  """The files of `files` that hold damaged records, scanned in parallel."""
  with concurrent.futures.ThreadPoolExecutor(_SCAN_THREADS) as pool:
    found = list(pool.map(scan, files))
  return {damage.path: damage for damage in found if damage.damaged}


def good_records(path: str, damaged: Sequence[tuple[int, int]]) -> Iterator[bytes]:
  """The data of every record of `path` outside the `damaged` ranges, in file order."""
  starts = dict(damaged)
  with tf.io.gfile.GFile(path, "rb") as f:
    size, offset = f.size(), 0
    while offset < size:
      if offset in starts:
        offset = starts[offset]
        f.seek(offset)
        continue
      header = f.read(_HEADER_BYTES)
      length = int.from_bytes(header[:8], "little")
      record = f.read(length + _FOOTER_BYTES)
      yield record[:length]
      offset += _HEADER_BYTES + length + _FOOTER_BYTES


def describe(found: dict[str, FileDamage]) -> str:
  """'FILE at byte N' for the first damaged record, and how many there are in all."""
  first = min(found.values(), key=lambda damage: damage.path)
  count = sum(len(damage.damaged) for damage in found.values())
  more = f" ({count} damaged records in {len(found)} files)" if count > 1 else ""
  return f"{first.path} at byte {first.damaged[0][0]}{more}"
