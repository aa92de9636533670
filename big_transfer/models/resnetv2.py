"""ResNet-v2 with Group Norm and Weight Standardization: the BiT network.

Pre-activation bottleneck units; every convolution standardizes its kernel per output channel
on each forward pass and every norm is a 32-group GroupNorm. The root max-pool pads with zeros,
as the published reference does, so logits match the published weights.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from big_transfer import errors

BLOCKS_PER_DEPTH = {
    14: (1, 1, 1, 1),  # Not a BiT network: a tiny one for demos and tests.
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
GN_GROUPS = 32
GN_EPSILON = 1e-5
WS_EPSILON = 1e-10
# Channels of the root convolution at width 1; stage s has 64 * 2**s bottleneck channels per unit
# and 4x that at its output. The .npz interop reads widths from it.
ROOT_FEATURES = 64
# What the backward pass recomputes instead of keeping: nothing, each unit's activations (only
# unit inputs are kept), or each stage's (only stage inputs are kept).
REMAT_POLICIES = ("none", "unit", "stage")
# The feature maps a network can return by name (`ResNetV2.features`): the root convolution's
# output (stride 2, before the pool) and the outputs of stages 1-4 (strides 4, 8, 16, 32), as
# timm's `features_only` and the detection literature's C2..C5.
FEATURES = ("stem", "C2", "C3", "C4", "C5")
# Output strides reachable by dilating the last stages instead of striding them (timm, scenic).
OUTPUT_STRIDES = (8, 16, 32)
# A module class (or a functools.partial of one) the network instantiates, as flax's
# `conv: ModuleDef`: the convolution and the norm are configuration, not branches.
ModuleDef = Any


def blocks_for(depth: int | Sequence[int]) -> tuple[int, ...]:
  """Units per stage for a named depth (26/50/101/152/200) or an explicit list of four."""
  if isinstance(depth, int):
    if depth not in BLOCKS_PER_DEPTH:
      raise errors.ConfigError(f"ResNet depth {depth} is not one of {sorted(BLOCKS_PER_DEPTH)}; "
                               "pass one of them or a list of units per stage such as [3, 4, 6, "
                               "3].")
    return BLOCKS_PER_DEPTH[depth]
  blocks = tuple(int(b) for b in depth)
  if not blocks or any(b < 1 for b in blocks):
    raise errors.ConfigError(f"Units per stage must be positive integers, got {list(depth)}.")
  return blocks


def depth_of(blocks: Sequence[int]) -> int:
  """The conventional depth name of a bottleneck network: 3 layers per unit + root + head."""
  return 3 * sum(blocks) + 2


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """One feature map of a network: its name, its stride against the input, its channels."""
  name: str
  stride: int
  channels: int


def stage_geometry(output_stride: int = 32) -> tuple[tuple[int, int, int], ...]:
  """(stride, first-unit dilation, dilation) of the 3x3 convolutions of each of the four stages.

  A stage whose input already has `output_stride` keeps its resolution: its stride becomes a
  dilation of its 3x3 convolutions. Its first unit dilates as the previous stage does, since it
  still sees the previous stage's sampling, as timm and DeepLab do.
  """
  if output_stride not in OUTPUT_STRIDES:
    raise errors.ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got "
                             f"{output_stride!r}.")
  geometry, reached, dilation = [], 4, 1  # The root conv and the pool give stride 4.
  for stage in range(4):
    stride, first_dilation = (1 if stage == 0 else 2), dilation
    if reached >= output_stride and stride > 1:
      dilation, stride = dilation * stride, 1
    reached *= stride
    geometry.append((stride, first_dilation, dilation))
  return tuple(geometry)


def feature_info(width: int, output_stride: int = 32) -> tuple[FeatureInfo, ...]:
  """The maps of `FEATURES` of a network of `width`, without building it."""
  infos, stride = [FeatureInfo("stem", 2, ROOT_FEATURES * width)], 4
  for stage, (stage_stride, _, _) in enumerate(stage_geometry(output_stride)):
    stride *= stage_stride
    infos.append(FeatureInfo(FEATURES[stage + 1], stride, 4 * ROOT_FEATURES * width * 2**stage))
  return tuple(infos)


def standardize(kernel: jnp.ndarray, epsilon: float = WS_EPSILON) -> jnp.ndarray:
  """Standardizes a conv kernel (kh, kw, c_in, c_out) per output channel over (kh, kw, c_in)."""
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) / jnp.sqrt(var + epsilon)


class StdConv(nn.Module):
  """Bias-free convolution with a weight-standardized kernel; the parameter stays float32 and is
  standardized on every forward pass (its cost is O(parameters), the convolution's O(parameters x
  pixels))."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: int = 0
  dilation: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x (B, H, W, C) zero-padded by `padding` on every side -> (B, H', W', features)."""
    kernel = self.param("kernel", nn.initializers.he_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    kernel = standardize(kernel).astype(self.dtype)
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel, (self.strides, self.strides), [(self.padding,) * 2] * 2,
        rhs_dilation=(self.dilation, self.dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"))


class GroupNorm(nn.Module):
  """BiT's GroupNorm: 32 groups, eps 1e-5, float32 `scale` and `bias` per channel.

  Statistics and normalization run in float32 whatever `dtype` (the output's) is.
  - One pass for both moments: the mean and the mean square of each group's deviations from a
    shift, the group's mean at its first pixel. The shift is one of the group's own values, so
    the cancellation that makes E[x^2] - E[x]^2 useless for a group whose mean is large against
    its spread stays bounded: a value lies at most sqrt(n) standard deviations from the mean of
    n values, and in practice within a few.
  - The normalization is one multiply-add per value, x * m + o, with m and o per example and
    channel (scale and bias folded in); its backward pass is lighter than that of
    (x - mean) * rsqrt(var + eps) * scale + bias. The output then rounds like x * m: within
    float32's precision times |mean| / spread, as the two-pass form's rounded mean does.
  `benchmarks/group_norm.py` times it beside flax's forms and measures their precision.
  """
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    if x.ndim != 4 or channels % GN_GROUPS:
      raise ValueError(f"GroupNorm expects (B, H, W, C) with C a multiple of {GN_GROUPS}, got "
                       f"{x.shape}.")
    grouped = (GN_GROUPS, channels // GN_GROUPS)
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32).reshape(grouped)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32).reshape(grouped)
    groups = x.astype(jnp.float32).reshape(*x.shape[:3], *grouped)
    axes = (1, 2, 4)
    # Any shift gives the same moments in exact arithmetic, so no gradient flows through it.
    # Slices, not indexing, which lowers to a gather TFLite lacks.
    first_pixel = jax.lax.slice_in_dim(jax.lax.slice_in_dim(groups, 0, 1, axis=1), 0, 1, axis=2)
    shift = jax.lax.stop_gradient(jnp.mean(first_pixel, axis=4, keepdims=True))
    deviations = groups - shift
    mean = jnp.mean(deviations, axes, keepdims=True)
    variance = jnp.maximum(jnp.mean(jnp.square(deviations), axes, keepdims=True)
                           - jnp.square(mean), 0.0)
    multiplier = jax.lax.rsqrt(variance + GN_EPSILON) * scale
    offset = bias - (shift + mean) * multiplier
    return (groups * multiplier + offset).reshape(x.shape).astype(self.dtype)


class Bottleneck(nn.Module):
  """Pre-activation bottleneck unit; the stride (or the dilation) sits on the 3x3 convolution.

  `conv` and `norm` are the network's, with its compute dtype already bound. Returns the unit's
  output and its pre-activation relu(gn1(x)), the normalized view of its input.
  """
  mid_features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    out_features = 4 * self.mid_features
    y = preactivation = nn.relu(self.norm(name="gn1")(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = self.conv(out_features, (1, 1), self.strides, name="conv_proj")(y)
    y = self.conv(self.mid_features, (1, 1), name="conv1")(y)
    y = nn.relu(self.norm(name="gn2")(y))
    y = self.conv(self.mid_features, (3, 3), self.strides, padding=self.dilation,
                  dilation=self.dilation, name="conv2")(y)
    y = nn.relu(self.norm(name="gn3")(y))
    y = self.conv(out_features, (1, 1), name="conv3")(y)
    return shortcut + y, preactivation


def check_width(width) -> None:
  """Raises a ConfigError unless `width`, the multiplier of every stage's channels (the x3 of
  R50x3), is a positive integer."""
  if not isinstance(width, int) or isinstance(width, bool) or width < 1:
    raise errors.ConfigError(f"The network has width {width!r}; widths are positive integers "
                             "(the 3 of R50x3).")


class ResNetV2(nn.Module):
  """The BiT network.

  Attributes:
    depth: 26, 50, 101, 152 or 200, or a list of units per stage.
    width: width multiplier (1 for R50x1, 3 for R50x3, ...).
    num_classes: size of the zero-initialized head; None returns the pooled pre-logits.
    head_bias_init: initial value of every head bias (e.g. -10 for a sigmoid loss over many
      classes, so each class starts near probability 0).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters, norm statistics and logits stay float32.
    remat: one of REMAT_POLICIES: recompute each unit's or each stage's activations in the
      backward pass instead of keeping them, for models whose activations do not fit.
    conv: the convolution (StdConv: weight-standardized, bias-free).
    norm: the norm (GroupNorm: 32 groups).
    features: names from FEATURES; when given, the network returns these maps instead of
      logits (`num_classes` must be None). See docs/features.md.
    output_stride: 8, 16 or 32: the last stages dilate instead of striding beyond it. The
      parameters are those of the undilated network.
    normalize_features: return each map through GN + ReLU: the norm the network applies to it
      next (the following stage's first `gn1`, or `norm_pre_head` for C5), so the published
      weights hold it; the stem, which BiT never normalizes, gets a new `stem_norm`.
  """
  depth: int | Sequence[int] = 50
  width: int = 1
  num_classes: int | None = 1000
  head_bias_init: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: str = "none"
  conv: ModuleDef = StdConv
  norm: ModuleDef = GroupNorm
  features: tuple[str, ...] = ()
  output_stride: int = 32
  normalize_features: bool = False

  def __post_init__(self):
    # At construction (models.create, experiment.build), before anything is traced.
    if self.remat not in REMAT_POLICIES:
      raise errors.ConfigError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r} "
                               "(--config.remat).")
    unknown = [f for f in self.features if f not in FEATURES]
    if unknown or len(set(self.features)) != len(self.features):
      raise errors.ConfigError(f"features must be distinct names from {FEATURES}, got "
                               f"{tuple(self.features)}.")
    if self.features and self.num_classes is not None:
      raise errors.ConfigError(f"A network returning feature maps {tuple(self.features)} has no "
                               f"head: pass num_classes=None, not {self.num_classes}.")
    stage_geometry(self.output_stride)  # Validates it with a helpful message.
    check_width(self.width)
    super().__post_init__()

  @nn.compact
  def __call__(self, images):
    """Maps images (B, H, W, 3) in [-1, 1] to float32 logits (B, num_classes).

    With `num_classes=None` returns float32 features (B, 2048 * width); with `features`, a dict
    of float32 maps (B, ceil(H / stride), ceil(W / stride), channels) by name, as `feature_info`
    lists them.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"ResNetV2 expects images of shape (B, H, W, 3), got {images.shape}.")
    conv = functools.partial(self.conv, dtype=self.dtype)
    norm = functools.partial(self.norm, dtype=self.dtype)
    x = conv(ROOT_FEATURES * self.width, (7, 7), strides=2, padding=3, name="root_conv")(images)
    taps = {"stem": x}
    if self.normalize_features and "stem" in self.features:
      taps["stem"] = nn.relu(norm(name="stem_norm")(x))
    # Zero padding (not -inf) as in the published reference; it matters for parity since the
    # root conv output can be negative.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    for stage, units in enumerate(blocks_for(self.depth)):
      if self.remat == "stage":
        x, preactivation = nn.remat(_stage, static_argnums=(2, 3, 4, 5))(
            self, x, stage, units, conv, norm)
      else:
        x, preactivation = _stage(self, x, stage, units, conv, norm)
      if self.normalize_features and stage > 0:
        taps[FEATURES[stage]] = preactivation  # relu(gn1) of the previous stage's output.
      taps[FEATURES[stage + 1]] = x
    x = nn.relu(norm(name="norm_pre_head")(x))
    if self.normalize_features:
      taps["C5"] = x
    if self.features:
      return {name: taps[name].astype(jnp.float32) for name in self.features}
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes is None:
      return features
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.constant(self.head_bias_init),
                    dtype=jnp.float32, param_dtype=jnp.float32, name="head")(features)


def _stage(net: ResNetV2, x: jnp.ndarray, stage: int, units: int, conv: ModuleDef,
           norm: ModuleDef) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The units of `stage` (0-based) as children of `net`, so that parameter names stay
  `block{stage}_unit{unit}` whatever `net.remat` wraps around them.

  Returns the stage's output and its first unit's pre-activation of the stage's input.
  """
  unit_module = nn.remat(Bottleneck) if net.remat == "unit" else Bottleneck
  mid = ROOT_FEATURES * net.width * 2**stage
  strides, first_dilation, dilation = stage_geometry(net.output_stride)[stage]
  x, input_preactivation = unit_module(mid, conv, norm, strides, first_dilation,
                                      name=f"block{stage + 1}_unit01", parent=net)(x)
  for unit in range(1, units):
    x, _ = unit_module(mid, conv, norm, 1, dilation, name=f"block{stage + 1}_unit{unit + 1:02d}",
                       parent=net)(x)
  return x, input_preactivation
