"""The BiT networks by name: `create("BiT-M-R50x1", num_classes=10)`."""

import re

import jax.numpy as jnp

from big_transfer import errors
from big_transfer.models.resnetv2 import ResNetV2, blocks_for, depth_of

# The published variants. BiT-S / BiT-M / BiT-L name the upstream data, not the network.
VARIANTS = {
    "R50x1": (50, 1),
    "R50x3": (50, 3),
    "R101x1": (101, 1),
    "R101x3": (101, 3),
    "R152x2": (152, 2),
    "R152x4": (152, 4),
}

_NAME = re.compile(r"^(?:BiT-[SML]-)?(R\d+x\d+)$")


def parse_name(name: str) -> tuple[int, int]:
  """Returns (depth, width) of a model name such as "BiT-M-R101x3" or "R50x1".

  Any depth of `ResNetV2` and any width are accepted ("R26x2"), not only the published ones.
  """
  match = _NAME.match(name)
  if not match:
    raise errors.ConfigError(f"Unknown model name {name!r}: use R<depth>x<width>, optionally prefixed "
                     f"by BiT-S-/BiT-M-/BiT-L-, e.g. {', '.join('BiT-M-' + v for v in VARIANTS)}.")
  depth, width = (int(v) for v in match.group(1)[1:].split("x"))
  blocks_for(depth)  # Validates the depth with a helpful message.
  if width < 1:
    raise errors.ConfigError(f"Model {name!r} has width {width}; widths start at 1.")
  return depth, width


def create(name: str, num_classes: int | None = 1000, dtype=jnp.float32) -> ResNetV2:
  """Builds a named BiT network, e.g. `create("BiT-M-R50x1", num_classes=10)`."""
  depth, width = parse_name(name)
  return ResNetV2(depth=depth, width=width, num_classes=num_classes, dtype=dtype)


__all__ = ["ResNetV2", "VARIANTS", "blocks_for", "create", "depth_of", "parse_name"]
