"""Comma-separated globs -> files, local or gs://, with errors that name the field."""

from collections.abc import Iterator, Sequence
import contextlib
import os

import tensorflow as tf

from bert_jax import errors


def match_files(patterns: Sequence[str] | str, field: str) -> list[str]:
  """Files matching each glob, sorted within a glob, globs in the order given.

  Args:
    patterns: Comma-separated globs, or a list of globs.
    field: The config field or flag they came from, for the error message.

  Raises:
    errors.UserError: If there is no glob, a glob matches nothing, or matches a directory.
  """
  if isinstance(patterns, str):
    patterns = patterns.split(",")
  globs = [pattern.strip() for pattern in patterns if pattern.strip()]
  if not globs:
    raise errors.UserError(f"{field} is empty: give comma-separated globs of files")
  files = []
  for pattern in globs:
    matches = sorted(tf.io.gfile.glob(pattern))
    if not matches:
      raise errors.UserError(f"{field}: no file matches {pattern!r}")
    for path in matches:
      if tf.io.gfile.isdir(path):
        raise errors.UserError(f"{field}: {path!r} (matched by {pattern!r}) is a directory")
    files.extend(matches)
  return files


def output_file(section: str, named: str, input_file: str, overwrite: bool, default: str) -> str:
  """Where a mode writes its result: `named`, else `default`.

  A named file is never the input, and no file that exists is replaced unless `overwrite`
  (config `<section>.overwrite`): the run stops with one line before computing anything.

  Args:
    section: The config section, for errors ('encode', 'predict').
    named: `<section>.output_file`; '' = `default`.
    input_file: `<section>.input_file`.
    overwrite: `<section>.overwrite`.
    default: The path in the workdir.
  """
  path = named or default
  if input_file and os.path.abspath(path) == os.path.abspath(input_file):
    raise errors.UserError(f"{section}.output_file={path} is {section}.input_file: it would "
                           "replace the input")
  if named and tf.io.gfile.exists(path) and not overwrite:
    raise errors.UserError(f"{section}.output_file={path} exists: set "
                           f"--config.{section}.overwrite=true to replace it")
  return path


@contextlib.contextmanager
def whole(path: str) -> Iterator[str]:
  """A temporary name beside `path` (local or gs://) for the block to write, renamed to `path`
  when the block ends: a reader sees the old file or the whole new one. If the block fails (a
  full disk, a signal: signals.Stopped), the temporary is removed, and the old file stays."""
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  partial = f"{path}.tmp-{os.getpid()}"
  try:
    yield partial
    tf.io.gfile.rename(partial, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(partial):
      tf.io.gfile.remove(partial)
    raise


def write_whole(path: str, data: bytes) -> None:
  """Writes `data` to `path` under a temporary name (`whole`)."""
  with whole(path) as partial, tf.io.gfile.GFile(partial, "wb") as f:
    f.write(data)
