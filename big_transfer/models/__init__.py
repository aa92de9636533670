"""The BiT networks by name: `create("BiT-M-R50x1", num_classes=10)`."""

import re

import jax.numpy as jnp

from big_transfer import errors
from big_transfer.models import resnetv2
from big_transfer.models.resnetv2 import (FEATURES, OUTPUT_STRIDES, REMAT_POLICIES, FeatureInfo,
                                          ResNetV2, blocks_for, depth_of)

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
    raise errors.ConfigError(f"Unknown model name {name!r}: use R<depth>x<width>, optionally "
                             "prefixed by BiT-S-/BiT-M-/BiT-L-, e.g. "
                             f"{', '.join('BiT-M-' + v for v in VARIANTS)}.")
  depth, width = (int(v) for v in match.group(1)[1:].split("x"))
  blocks_for(depth)  # Validates the depth and the width with a helpful message.
  resnetv2.check_width(width)
  return depth, width


# Compute dtypes by the names configs use; parameters stay float32 whatever the compute dtype.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_named(name: str) -> jnp.dtype:
  """The compute dtype of a config's `model_dtype`."""
  if name not in DTYPES:
    raise errors.ConfigError(f"model_dtype must be one of {sorted(DTYPES)}, got {name!r}.")
  return DTYPES[name]


def create(name: str, num_classes: int | None = 1000, dtype=jnp.float32,
           head_bias_init: float = 0.0, remat: str = "none", features: tuple[str, ...] = (),
           output_stride: int = 32, normalize_features: bool = False) -> ResNetV2:
  """Builds a named BiT network, e.g. `create("BiT-M-R50x1", num_classes=10)`.

  `remat` (one of REMAT_POLICIES) trades compute for activation memory, see `ResNetV2`.
  `create(name, num_classes=None, features=FEATURES)` returns a backbone whose `apply` gives a
  dict of feature maps by name; `output_stride` dilates its last stages (docs/features.md).
  """
  depth, width = parse_name(name)
  return ResNetV2(depth=depth, width=width, num_classes=num_classes,
                  head_bias_init=head_bias_init, dtype=dtype, remat=remat,
                  features=tuple(features), output_stride=output_stride,
                  normalize_features=normalize_features)


def feature_info(name: str, output_stride: int = 32) -> tuple[FeatureInfo, ...]:
  """Name, stride and channels of each map in FEATURES of a named network, without building it."""
  return resnetv2.feature_info(parse_name(name)[1], output_stride)


__all__ = ["DTYPES", "FEATURES", "OUTPUT_STRIDES", "REMAT_POLICIES", "FeatureInfo", "ResNetV2",
           "VARIANTS", "blocks_for", "create", "depth_of", "dtype_named", "feature_info",
           "parse_name"]
