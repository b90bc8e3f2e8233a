"""The one exception for a user's mistake: a bad config field or a bad input file.

`main` prints it as one line (no traceback) and exits non-zero; the message names the field or
the file. Anything else that escapes is a bug and keeps its traceback. `flags_parser` does the
same for a bad flag of a command (absl prints two lines and its usage hint otherwise).
"""

import sys
from typing import Callable

from absl import flags


class UserError(ValueError):
  """A bad config field or input file; the message names it."""


def flags_parser(program: str) -> Callable[[list[str]], list[str]]:
  """absl's flag parsing for `app.run(main, flags_parser=...)`: a bad flag is one line,
  '<program>: error: <what absl says>', exit status 1."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      # absl puts each missing required flag on a line of its own.
      sys.exit(f"{program}: error: {'; '.join(str(e).splitlines())}")

  return parse
