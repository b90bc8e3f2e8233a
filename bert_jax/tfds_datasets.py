"""TFDS datasets, prepared on first use, or one line at once where they cannot be.

TFDS downloads and prepares a dataset the first time it is read. Offline, its downloader
retries each URL ten times with growing pauses (3.4 minutes for ag_news_subset on a machine
without DNS) before it gives up with a traceback. A dataset whose download hosts cannot be
reached now fails in about a second instead: the hosts are TFDS's own record of the dataset's
URLs (its checksums) plus its GCS mirror, each tried with one short TCP connect. Behind a
proxy (HTTPS_PROXY and the like, which TFDS's downloader honours) a direct connect says
nothing: there the proxy itself is tried the same way. One that does not answer is one line
naming it; one that answers is trusted, and the download left to TFDS.
"""

import os
import socket
import urllib.parse
import urllib.request

from bert_jax import errors

# TFDS's mirror of prepared datasets (gs://tfds-data), read over HTTPS.
_GCS_MIRROR_HOST = "storage.googleapis.com"
_CONNECT_TIMEOUT_S = 3.0


def reachable(host: str, port: int = 443) -> bool:
  """Whether a TCP connection to host:port opens within a few seconds."""
  try:
    with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
      return True
  except OSError:  # DNS failure (socket.gaierror), refused, unreachable, timed out.
    return False


def behind_proxy() -> bool:
  """Whether the environment names a proxy for downloads (urllib's reading of it, as requests
  reads the same variables)."""
  proxies = urllib.request.getproxies()
  return any(proxies.get(scheme) for scheme in ("https", "http", "all"))


# The variables urllib and requests read for an HTTPS download, in the order they prefer them.
_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "http_proxy",
                    "HTTP_PROXY")


def dead_proxy() -> str | None:
  """'NAME=URL' of the proxy the environment names for downloads, when it does not answer (no
  TCP connection within a few seconds); None when it answers or none is named."""
  for name in _PROXY_VARIABLES:
    url = os.environ.get(name)
    if url:
      parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
      try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
      except ValueError:  # A port that is not a number.
        return f"{name}={url}"
      if not parsed.hostname or not reachable(parsed.hostname, port):
        return f"{name}={url}"
      return None
  return None


def download_hosts(builder) -> list[str]:
  """The hosts builder downloads from, as TFDS's checksums record them (sorted)."""
  urls = builder.url_infos or {}
  return sorted({urllib.parse.urlparse(url).hostname for url in urls} - {None})


def prepared_builder(name: str, data_dir: str | None):
  """The TFDS builder of name, downloaded and prepared here if it is not yet.

  Args:
    name: TFDS name, with config and version if needed (e.g. 'glue/sst2').
    data_dir: TFDS data_dir; None or '' = TFDS's default.

  Returns:
    The builder, prepared: builder.as_dataset(split=...) reads it.

  Raises:
    errors.UserError: For a name TFDS does not know, or a dataset that is not prepared and
      cannot be downloaded (its hosts unreachable, or the download failed).
  """
  # Imported here: importing TFDS takes seconds, and only TFDS sources need it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.UserError(f"TFDS has no dataset {name!r}") from None
  if builder.is_prepared():
    return builder
  not_here = (f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and could not be "
              "downloaded")
  fix = "run once with network or set data.tfds_data_dir to where it is prepared"
  hosts = download_hosts(builder)
  proxy = dead_proxy() if hosts and behind_proxy() else None
  if proxy:
    raise errors.UserError(f"{not_here}: the proxy {proxy} does not answer; start it, unset "
                           f"the variable, or set data.tfds_data_dir to where it is prepared")
  # A builder without recorded URLs (manual or generated data) is left to TFDS to judge.
  if (hosts and not behind_proxy()
      and not any(reachable(host) for host in [*hosts, _GCS_MIRROR_HOST])):
    raise errors.UserError(f"{not_here}: none of its hosts ({', '.join(hosts)}) can be "
                           f"reached from this machine; {fix}")
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    # Network, checksum, disk: TFDS raises a different type for each; all mean the same here.
    reason = (str(e).strip().splitlines() or [""])[0][:300]
    raise errors.UserError(f"{not_here} ({type(e).__name__}: {reason}); {fix}") from e
  return builder
