"""Comma-separated globs -> files, local or gs://, with errors that name the field."""

from collections.abc import Sequence

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
