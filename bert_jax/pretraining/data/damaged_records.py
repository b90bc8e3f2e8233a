"""Damaged records in TFRecord files: where they are, and a reader that goes past them.

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

_HEADER_BYTES = 12  # The length and its checksum.
_FOOTER_BYTES = 4  # The data's checksum.
# Files scanned at once (gs:// reads are slow, not busy); each is held whole while scanned.
_SCAN_THREADS = 4


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


def _record_at(data: bytes | memoryview, offset: int) -> int | None:
  """The offset after a whole, intact record starting at `offset`; None if there is none."""
  header = data[offset:offset + _HEADER_BYTES]
  if len(header) < _HEADER_BYTES:
    return None
  if int.from_bytes(header[8:], "little") != masked_crc32c(bytes(header[:8])):
    return None
  length = int.from_bytes(header[:8], "little")
  end = offset + _HEADER_BYTES + length + _FOOTER_BYTES
  if end > len(data):
    return None
  body = data[offset + _HEADER_BYTES:end - _FOOTER_BYTES]
  if int.from_bytes(data[end - _FOOTER_BYTES:end], "little") != masked_crc32c(bytes(body)):
    return None
  return end


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
    header = data[offset:offset + _HEADER_BYTES]
    length_ok = (len(header) == _HEADER_BYTES and int.from_bytes(header[8:], "little")
                 == masked_crc32c(bytes(header[:8])))
    skip_to = offset + _HEADER_BYTES + int.from_bytes(header[:8], "little") + _FOOTER_BYTES
    if length_ok and skip_to <= len(data):
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
