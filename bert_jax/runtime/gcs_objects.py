"""Cloud Storage objects created only where none is, and deleted only as they were read.

tf.io.gfile has no create-only-if-absent on gs://. Cloud Storage has one: a write or a delete may
name the object generation it expects (`ifGenerationMatch`), 0 standing for "no live object", and
the service refuses it (HTTP 412) when another writer got there first. workdir_lock builds its
gs:// lock on these calls; local runs never import this module.

Each call's requests give up after DEADLINE_SECONDS, retries included, and every error of the
client (no credentials, no network, no bucket, no permission) becomes one errors.UserError line
naming the gs:// path. STORAGE_EMULATOR_HOST (an emulator's http://host:port) is honoured.
"""

import contextlib
import functools
import os
import re
from typing import Iterator

from google.api_core import exceptions
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage import retry as storage_retry
import requests

from bert_jax import errors

# Retries included. A lock is taken as a run starts: a run that cannot reach its workdir should
# say so in seconds, not after the client's default of two minutes of retries.
DEADLINE_SECONDS = 20.0
# One request's connect and read timeout, within the deadline above.
REQUEST_TIMEOUT_SECONDS = 10.0
_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"


def create_if_absent(path: str, text: str) -> bool:
  """Writes the object at `path` only if there is none.

  Returns:
    True if written; False if an object was already there (another writer was first).

  Raises:
    errors.UserError: Cloud Storage cannot be reached or refuses the write.
  """
  with _user_errors(path, "written"):
    try:
      # A retry after a lost answer may find the object its first try wrote and answer False:
      # the caller reads the holder and finds itself (workdir_lock takes that over as stale).
      _blob(path).upload_from_string(text, if_generation_match=0, **_limits())
    except exceptions.PreconditionFailed:
      return False
  return True


def read(path: str) -> tuple[bytes, int] | None:
  """The object's contents and generation, or None if there is no such object.

  Raises:
    errors.UserError: Cloud Storage cannot be reached or refuses the read.
  """
  with _user_errors(path, "read"):
    blob = _blob(path)
    try:
      data = blob.download_as_bytes(**_limits())
    except exceptions.NotFound:
      return None
  # Taken from the download's own headers: the generation of these very bytes, even if another
  # writer replaces the object a moment later.
  return data, int(blob.generation)


def delete_if_generation(path: str, generation: int) -> bool:
  """Deletes the object only if it still is the generation read.

  Returns:
    True if deleted; False if it is gone or was replaced meanwhile.

  Raises:
    errors.UserError: Cloud Storage cannot be reached or refuses the delete.
  """
  with _user_errors(path, "deleted"):
    try:
      _blob(path).delete(if_generation_match=generation, **_limits())
    except (exceptions.PreconditionFailed, exceptions.NotFound):
      return False
  return True


def is_object(path: str) -> bool:
  """Whether `path` names an object itself (not only a prefix of other objects' names).

  Raises:
    errors.UserError: Cloud Storage cannot be reached or refuses the look-up.
  """
  name = _bucket_and_name(path)[1]
  if not name or name.endswith("/"):
    return False  # A bucket's root, or a name that says it is a directory.
  with _user_errors(path, "looked up"):
    return _blob(path).exists(**_limits())


def _limits() -> dict:
  # Read at each call, so that a test may shorten the deadline.
  return {"retry": storage_retry.DEFAULT_RETRY.with_timeout(DEADLINE_SECONDS),
          "timeout": REQUEST_TIMEOUT_SECONDS}


def _bucket_and_name(path: str) -> tuple[str, str]:
  if not path.startswith("gs://"):
    raise ValueError(f"not a gs:// path: {path}")
  bucket, _, name = path[len("gs://"):].partition("/")
  return bucket, name


def _blob(path: str) -> storage.Blob:
  bucket, name = _bucket_and_name(path)
  if not bucket or not name:
    raise errors.UserError(f"{path}: not an object's path (gs://BUCKET/NAME)")
  return _client(os.environ.get(_EMULATOR_HOST)).bucket(bucket).blob(name)


@functools.cache
def _client(emulator_host: str | None) -> storage.Client:
  """One client per endpoint (the client reads STORAGE_EMULATOR_HOST itself), kept for its
  credentials and connections."""
  if emulator_host:
    # An emulator checks no credentials, and a machine that runs one may have none to find.
    return storage.Client(project=None, credentials=auth_credentials.AnonymousCredentials())
  # Objects are named by bucket: no project is needed, so none is looked for.
  return storage.Client(project=None)


@contextlib.contextmanager
def _user_errors(path: str, done: str) -> Iterator[None]:
  try:
    yield
  except (exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError,
          requests.exceptions.RequestException, ValueError) as e:
    if isinstance(e, errors.UserError):
      raise
    raise errors.UserError(f"{path}: cannot be {done} on Cloud Storage: {_reason(e)}") from None


def _reason(error: BaseException) -> str:
  if isinstance(error, exceptions.RetryError) and error.cause is not None:
    return f"gave up within {DEADLINE_SECONDS:g} s: {_reason(error.cause)}"
  if isinstance(error, exceptions.GoogleAPICallError):
    text = f"HTTP {error.code}: {error.message}"
  elif isinstance(error, auth_exceptions.GoogleAuthError):
    text = f"credentials: {error}"
  elif isinstance(error, requests.exceptions.ConnectionError):
    # requests nests urllib3's errors, each repeating the one before: the OS's words say it.
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))
    endpoint = os.environ.get(_EMULATOR_HOST) or "storage.googleapis.com"
    text = f"no connection to {endpoint}: {found.group(0) if found else error}"
  else:
    text = str(error)
  return " ".join(text.split())[:300]
