"""big_transfer: Big Transfer (BiT) pre-training and transfer in JAX/Flax."""

import importlib
import sys

__version__ = "0.1.0"

# Short names for the modules users import most, kept stable across the layout by concern.
_SHORT_NAMES = {
    "interop": "big_transfer.models.interop",
    "hyperrule": "big_transfer.recipes.hyperrule",
    "losses": "big_transfer.training.losses",
}


def __getattr__(name):
  if name in _SHORT_NAMES:
    return importlib.import_module(_SHORT_NAMES[name])
  raise AttributeError(f"module 'big_transfer' has no attribute {name!r}")


def _starting_a_program() -> bool:
  """Whether this import is `python -m big_transfer.PROGRAM` locating its module."""
  argv = getattr(sys, "orig_argv", [])
  return (sys.argv[:1] == ["-m"] and "-m" in argv[:-1]
          and argv[argv.index("-m") + 1].startswith("big_transfer."))


if _starting_a_program():
  # A Ctrl-C during the program's own imports (seconds of JAX and TensorFlow), before
  # `command_line.run` takes over, ends in its one line too.
  from big_transfer import command_line  # noqa: E402
  command_line.interrupt_in_one_line_until_run()
