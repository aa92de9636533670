"""big_transfer: Big Transfer (BiT) pre-training and transfer in JAX/Flax."""

import importlib

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
