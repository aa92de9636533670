"""Errors a user can fix, by type.

The command line prints a `UserError` as one `error: ...` line and exits 1; its message says what
was wrong, the value seen and what to do. Every other exception (a bug of ours, a transient
`OSError` from remote storage) keeps its traceback. The subclasses also derive from the builtin
type a library caller would expect (`ValueError`, `ArithmeticError`), so `except ValueError`
still catches a bad setting.
"""

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """" Did you mean 'a', 'b'?" naming the known values closest to `name`, or "" when none is."""
  close = difflib.get_close_matches(name, list(known), n=3)
  return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class UserError(Exception):
  """Something the user can fix: a setting, the data, the devices or a checkpoint."""


class ConfigError(UserError, ValueError):
  """A setting that cannot work: a config value, a recipe argument, a flag, mesh or batch."""


class DataError(UserError, ValueError):
  """Data that is missing, unprepared, too small or not laid out as expected."""


class CheckpointError(UserError, ValueError):
  """A checkpoint or pretrained file that is missing, damaged, or of another run or model."""


class NonFiniteLossError(UserError, ArithmeticError):
  """The loss became NaN or infinite; the run stopped without saving the bad state."""


class WorkdirHeldError(UserError):
  """Another live job holds the workdir; this one stopped before touching it."""
