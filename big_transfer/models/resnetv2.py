"""ResNet-v2 with Group Norm and Weight Standardization: the BiT network.

Pre-activation bottleneck units; every convolution standardizes its kernel per output channel
on each forward pass and every norm is a 32-group GroupNorm. The root max-pool pads with zeros,
as the published reference does, so logits match the published weights.
"""

import functools
from collections.abc import Sequence

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
# What the backward pass recomputes instead of keeping: nothing, each unit's activations (only
# unit inputs are kept), or each stage's (only stage inputs are kept).
REMAT_POLICIES = ("none", "unit", "stage")
# XLA:CPU's convolution takes a slow path when a k x k convolution (k > 1) has at most 2 x 2
# output pixels, as the last stage has at 32-64 px: 40-100x slower, forward and backward, than
# the matrix product of image patches. There, and only on CPU, the product is what runs.
CPU_PATCHES_MAX_OUTPUT_PIXELS = 4


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


def standardize(kernel: jnp.ndarray, epsilon: float = WS_EPSILON) -> jnp.ndarray:
  """Standardizes a conv kernel (kh, kw, c_in, c_out) per output channel over (kh, kw, c_in)."""
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) / jnp.sqrt(var + epsilon)


def standardize_kernels(params):
  """`params` with every convolution kernel standardized, for a model with
  `kernels_standardized=True`: the train step standardizes once per step, not once per
  micro-batch. Convolution kernels are the 4-D `kernel` leaves (the head's is 2-D)."""
  def maybe_standardize(path, leaf):
    is_conv = getattr(path[-1], "key", None) == "kernel" and jnp.ndim(leaf) == 4
    return standardize(leaf) if is_conv else leaf
  return jax.tree_util.tree_map_with_path(maybe_standardize, params)


class StdConv(nn.Module):
  """Bias-free convolution with a weight-standardized kernel; parameters stay float32.

  With `kernels_standardized` the kernel it is given is used as it is (see `standardize_kernels`).
  """
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: int = 0
  dtype: jnp.dtype = jnp.float32
  kernels_standardized: bool = False

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.he_normal(),
                        (*self.kernel_size, in_features, self.features), jnp.float32)
    if not self.kernels_standardized:
      kernel = standardize(kernel)
    kernel = kernel.astype(self.dtype)
    return convolve(x.astype(self.dtype), kernel, self.strides, self.padding)


def convolve(x: jnp.ndarray, kernel: jnp.ndarray, strides: int, padding: int) -> jnp.ndarray:
  """Convolves x (B, H, W, C) with kernel (kh, kw, C, O), zero-padded on every side; (B, H', W', O).

  See CPU_PATCHES_MAX_OUTPUT_PIXELS for the CPU path; elsewhere it is `lax.conv_general_dilated`.
  """
  def by_convolution(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (strides, strides), [(padding, padding)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def by_patches(x, kernel):
    kh, kw = kernel.shape[:2]
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def window(i, j):  # Strided slices (not indexing, which lowers to a gather TFLite lacks).
      rows = jax.lax.slice_in_dim(padded, i, i + strides * (out_h - 1) + 1, strides, axis=1)
      return jax.lax.slice_in_dim(rows, j, j + strides * (out_w - 1) + 1, strides, axis=2)

    patches = jnp.concatenate([window(i, j) for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.einsum("bhwk,ko->bhwo", patches, kernel.reshape(-1, kernel.shape[-1]))

  out_h, out_w = ((size + 2 * padding - k) // strides + 1
                  for size, k in zip(x.shape[1:3], kernel.shape[:2]))
  if kernel.shape[0] * kernel.shape[1] == 1 or out_h * out_w > CPU_PATCHES_MAX_OUTPUT_PIXELS:
    return by_convolution(x, kernel)
  return jax.lax.platform_dependent(x, kernel, cpu=by_patches, default=by_convolution)


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
  """Pre-activation bottleneck unit; the stride sits on the 3x3 convolution."""
  mid_features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  kernels_standardized: bool = False

  @nn.compact
  def __call__(self, x):
    out_features = 4 * self.mid_features
    conv = functools.partial(StdConv, dtype=self.dtype,
                             kernels_standardized=self.kernels_standardized)
    y = nn.relu(GroupNorm(self.dtype, name="gn1")(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = conv(out_features, (1, 1), self.strides, name="conv_proj")(y)
    y = conv(self.mid_features, (1, 1), name="conv1")(y)
    y = nn.relu(GroupNorm(self.dtype, name="gn2")(y))
    y = conv(self.mid_features, (3, 3), self.strides, padding=1, name="conv2")(y)
    y = nn.relu(GroupNorm(self.dtype, name="gn3")(y))
    y = conv(out_features, (1, 1), name="conv3")(y)
    return shortcut + y


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
    kernels_standardized: the convolution kernels of the parameters it is applied to are
      already standardized (`standardize_kernels`); parameter names and shapes are unchanged.
  """
  depth: int | Sequence[int] = 50
  width: int = 1
  num_classes: int | None = 1000
  head_bias_init: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: str = "none"
  kernels_standardized: bool = False

  def __post_init__(self):
    # At construction (models.create, experiment.build), before anything is traced.
    if self.remat not in REMAT_POLICIES:
      raise errors.ConfigError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r} "
                               "(--config.remat).")
    super().__post_init__()

  @nn.compact
  def __call__(self, images):
    """Maps images (B, H, W, 3) in [-1, 1] to float32 logits (B, num_classes).

    With `num_classes=None` returns float32 features (B, 2048 * width).
    """
    if not isinstance(self.width, int) or self.width < 1:
      raise ValueError(f"ResNetV2 width must be a positive integer, got {self.width!r}.")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"ResNetV2 expects images of shape (B, H, W, 3), got {images.shape}.")
    root_features = 64 * self.width
    x = StdConv(root_features, (7, 7), strides=2, padding=3, dtype=self.dtype,
                kernels_standardized=self.kernels_standardized, name="root_conv")(images)
    # Zero padding (not -inf) as in the published reference; it matters for parity since the
    # root conv output can be negative.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    for stage, units in enumerate(blocks_for(self.depth)):
      if self.remat == "stage":
        x = nn.remat(_stage, static_argnums=(2, 3))(self, x, stage, units)
      else:
        x = _stage(self, x, stage, units)
    x = nn.relu(GroupNorm(self.dtype, name="norm_pre_head")(x))
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes is None:
      return features
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.constant(self.head_bias_init),
                    dtype=jnp.float32, param_dtype=jnp.float32, name="head")(features)


def _stage(net: ResNetV2, x: jnp.ndarray, stage: int, units: int) -> jnp.ndarray:
  """The units of `stage` (0-based) as children of `net`, so that parameter names stay
  `block{stage}_unit{unit}` whatever `net.remat` wraps around them."""
  unit_module = nn.remat(Bottleneck) if net.remat == "unit" else Bottleneck
  mid = 64 * net.width * 2**stage
  for unit in range(units):
    strides = 2 if (stage > 0 and unit == 0) else 1
    x = unit_module(mid, strides, dtype=net.dtype, kernels_standardized=net.kernels_standardized,
                    name=f"block{stage + 1}_unit{unit + 1:02d}", parent=net)(x)
  return x
