"""Where a run's progress lines go: stdout of process 0, and nowhere on the other processes.

Every host of a multi-host job runs the same code, so each would print the same lines; one
copy is enough. Runtime code says `report.line(...)` instead of print(), which makes a notebook
or a library caller on a pod print once too, with sys.stdout left alone. Errors and warnings
about one host's own state go to stderr with print(), from whichever host sees them.
"""

import jax


def line(message: str) -> None:
  """Prints one progress line (flushed: logs are read while a run goes on) on process 0."""
  if jax.process_index() == 0:
    print(message, flush=True)
