"""What the command-line tools share: the `--config` recipe flag, absl flag parsing that reports
a bad `--config` in one line, and the refusal of positional arguments.

A recipe's own error (a bad `configs/NAME.py:ARGS`), an unknown `--config.KEY` and a value of
the wrong type end in one `error:` line and exit code 1, as every UserError does.
"""

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from big_transfer import errors


def define_recipe_flag(example: str) -> None:
  """Defines the locked `--config=configs/NAME.py[:ARGS]` flag (`--config.KEY=VALUE` overrides);
  call it only when running as a program, so importing a tool registers no flags."""
  config_flags.DEFINE_config_file("config", None, f"Recipe file, e.g. {example}.",
                                  lock_config=True)


def refuse_positional_arguments(argv: list[str]) -> None:
  """absl's usage error for anything left after the flags (every tool takes flags only)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")


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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (pass it as `app.run(main, flags_parser=parse_flags)`), with a missing
  or unparsable recipe file, a bad --config value or recipe argument reported in one line."""
  overrides = [arg for arg in argv[1:] if arg.startswith("--config.")]
  try:
    for arg in argv[1:]:
      if arg.startswith("--config="):
        check_python_file(arg.removeprefix("--config=").partition(":")[0], "--config")
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if isinstance(e.__context__, errors.UserError):
      # ml_collections re-raises a recipe's error with the traceback in its message; the error
      # itself is its last line, "big_transfer.errors.ConfigError: <message>".
      print(f"error: {str(e.__context__).strip().splitlines()[-1].split(': ', 1)[-1]}",
            file=sys.stderr)
    else:
      print(f"error: {e}", file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if not overrides:
      raise
    # ml_collections raises these for keys the locked config does not have or bad values.
    if isinstance(e, (AttributeError, KeyError)):
      key = str(e).strip("\"'")
      named = [o.split("=")[0] for o in overrides if o.split("=")[0].endswith(f".{key}")]
      print(f"error: {' '.join(named) or key}: the recipe has no key {key!r}. Every "
            "--config.KEY must be a key of the recipe (big_transfer/recipes/schema.py lists them).",
            file=sys.stderr)
    else:
      print(f"error: cannot apply {' '.join(overrides)}: {e}. Every --config.KEY must be given "
            "a value of its type.", file=sys.stderr)
  sys.exit(1)
