"""The one wrapper of every Python program (`python -m big_transfer.NAME`): absl flags, the
one-line `error:` and the exit codes.

A program defines its flags, then calls `command_line.run(main)`. Its exit code is then:
0 when `main` returns (or returns 0), what `main` returns otherwise, and `USER_ERROR` (1) with
one `error: <message>` line on stderr for anything the user can fix: a `errors.UserError` raised
by `main`, a bad or unknown flag, a missing or unparsable `--config` file, a recipe's own error
(a bad `configs/NAME.py:ARGS`), an unknown `--config.KEY` or a value of the wrong type; and
`INTERRUPTED` (130) with one line for a Ctrl-C while the flags are read or that `main` did not
handle itself (the line of the innermost `errors.on_interrupt` block it left: what was
interrupted, that nothing written is lost, how to go on; `--verbosity=1` logs its traceback too).
Any other exception keeps its traceback. A Ctrl-C during a program's imports, before `run`,
ends in the same line (`interrupt_in_one_line_until_run`, which `big_transfer/__init__.py` calls
when `python -m big_transfer.PROGRAM` starts).
"""

import os
import pathlib
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from big_transfer import errors

# What a program exits with when the user can fix what stopped it (one `error:` line says what).
USER_ERROR = 1
# 128 + SIGTERM, what a process killed by the preemption signal reports: a training run stopped
# by SIGTERM after saving a checkpoint exits with it, so schedulers that restart failed jobs
# (SLURM --requeue, Kubernetes) rerun it.
PREEMPTED = 143
# 128 + SIGINT, what a shell reports for a program that Ctrl-C ended.
INTERRUPTED = 130
# What a Ctrl-C outside every `errors.on_interrupt` block says: each program writes its files
# whole or not at all (big_transfer.atomic, TFDS's temporary folders), so it is true of all.
_INTERRUPTED_LINE = ("Interrupted (Ctrl-C) before the program finished: a file is written whole "
                     "or not at all, so nothing already written is lost; rerun the same command.")


def interrupt_in_one_line_until_run() -> None:
  """Until `run` starts, a Ctrl-C prints the one line and ends the process with INTERRUPTED:
  nothing is written before then, and a program's imports are no Python code of ours that a
  KeyboardInterrupt could leave through a handler."""
  def stop(signum, frame):
    del signum, frame
    print(_INTERRUPTED_LINE, file=sys.stderr, flush=True)
    os._exit(INTERRUPTED)

  signal.signal(signal.SIGINT, stop)


def run(main: Callable[[list[str]], int | None]) -> NoReturn:
  """Runs `main(argv)` as the program: absl parses the flags (`_parse_flags`), positional
  arguments are refused, and the process exits with `exit_code(main, argv)`."""
  signal.signal(signal.SIGINT, signal.default_int_handler)  # From here on, a KeyboardInterrupt.
  app.run(lambda argv: sys.exit(exit_code(main, argv)), flags_parser=_parse_flags)


def exit_code(main: Callable[[list[str]], int | None], argv: list[str]) -> int:
  """`main(argv)`'s return value (None: 0), USER_ERROR with the one `error:` line of a
  UserError it raised, or INTERRUPTED with the one line of a Ctrl-C; any other exception
  propagates with its traceback."""
  try:
    _refuse_positional_arguments(argv)
    return main(argv) or 0
  except errors.UserError as e:
    return _fail(str(e))
  except KeyboardInterrupt as e:
    return _interrupted(e)


def _interrupted(interrupt: KeyboardInterrupt) -> int:
  logging.debug("Interrupted here:", exc_info=interrupt)  # Shown with --verbosity=1.
  print(errors.interrupt_line(interrupt) or _INTERRUPTED_LINE, file=sys.stderr, flush=True)
  return INTERRUPTED


def _fail(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return USER_ERROR


def define_recipe_flag(example: str) -> None:
  """Defines the locked `--config=configs/NAME.py[:ARGS]` flag (`--config.KEY=VALUE` overrides);
  call it only when running as a program, so importing a tool registers no flags."""
  config_flags.DEFINE_config_file("config", None, f"Recipe file, e.g. {example}.",
                                  lock_config=True)


def _refuse_positional_arguments(argv: list[str]) -> None:
  """Every program takes flags only: anything left after them is a ConfigError."""
  if len(argv) > 1:
    raise errors.ConfigError(f"Unexpected arguments: {' '.join(argv[1:])}; every program takes "
                             "flags only (--help lists them).")


def check_python_file(path: str, flag: str) -> None:
  """Raises a ConfigError unless `path` (the file of `flag`, e.g. "--config") is a Python file
  that exists and parses; a syntax error is named with its line."""
  try:
    source = pathlib.Path(path).read_text()
  except OSError as e:
    raise errors.ConfigError(f"{flag}={path}: cannot read the file ({e.strerror or e}); pass an "
                             "existing recipe such as configs/NAME.py.") from None
  try:
    compile(source, path, "exec")
  except SyntaxError as e:
    raise errors.ConfigError(f"{flag}={path}: line {e.lineno}: {type(e).__name__}: {e.msg}; "
                             "fix the file.") from None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`run` uses it), with a bad or unknown flag, a missing or unparsable
  recipe file, a bad --config value or recipe argument reported in one `error:` line (exit
  USER_ERROR)."""
  overrides = [arg for arg in argv[1:] if arg.startswith("--config.")]
  try:
    for arg in argv[1:]:
      if arg.startswith("--config="):
        check_python_file(arg.removeprefix("--config=").partition(":")[0], "--config")
    return flags.FLAGS(argv)
  except KeyboardInterrupt as e:  # Loading a recipe imports JAX: seconds a Ctrl-C may fall in.
    sys.exit(_interrupted(e))
  except errors.UserError as e:
    message = str(e)
  except flags.Error as e:
    if isinstance(e.__context__, errors.UserError):
      # ml_collections re-raises a recipe's error with the traceback in its message; the error
      # itself is its last line, "big_transfer.errors.ConfigError: <message>".
      message = str(e.__context__).strip().splitlines()[-1].split(": ", 1)[-1]
    else:
      message = str(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if not overrides:
      raise
    # ml_collections raises these for keys the locked config does not have or bad values.
    if isinstance(e, (AttributeError, KeyError)):
      key = str(e).strip("\"'")
      named = [o.split("=")[0] for o in overrides if o.split("=")[0].endswith(f".{key}")]
      message = (f"{' '.join(named) or key}: the recipe has no key {key!r}. Every --config.KEY "
                 "must be a key of the recipe (big_transfer/recipes/schema.py lists them).")
    else:
      message = (f"cannot apply {' '.join(overrides)}: {e}. Every --config.KEY must be given a "
                 "value of its type.")
  sys.exit(_fail(message))
