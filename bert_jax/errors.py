"""The one exception for a user's mistake: a bad config field or a bad input file.

`main` prints it as one line (no traceback) and exits non-zero; the message names the field or
the file. Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """A bad config field or input file; the message names it."""
