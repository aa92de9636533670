"""Errors a user can fix, by type.

The command line prints a `UserError` as one `error: ...` line and exits 1; its message says what
was wrong, the value seen and what to do. Every other exception (a bug of ours, a transient
`OSError` from remote storage) keeps its traceback. The subclasses also derive from the builtin
type a library caller would expect (`ValueError`, `ArithmeticError`), so `except ValueError`
still catches a bad setting.

A Ctrl-C is no error, but it too ends in one line: `on_interrupt(line)` names what a block does
and what a rerun does after it, and `command_line` prints the line of the innermost such block
that a KeyboardInterrupt left.
"""

import contextlib
import difflib
from collections.abc import Iterable, Iterator


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


@contextlib.contextmanager
def on_interrupt(line: str) -> Iterator[None]:
  """A KeyboardInterrupt leaving the block carries `line` (what was interrupted, that nothing
  written is lost, how to go on) for `interrupt_line`; a block nested inside sets its own first."""
  try:
    yield
  except KeyboardInterrupt as e:
    if not hasattr(e, "interrupt_line"):
      e.interrupt_line = line
    raise


def interrupt_line(interrupt: KeyboardInterrupt) -> str | None:
  """The line of the innermost `on_interrupt` block `interrupt` left, or None outside any."""
  return getattr(interrupt, "interrupt_line", None)
