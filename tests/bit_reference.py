"""An independent BiT ResNet-v2 written from ../shared/BIT_FACTS.md: plain jax.lax, no flax.

It reads weights straight from the published npz key layout, so comparing it with the flax
model checks both the architecture and the interop key mapping.
"""

import jax
import jax.numpy as jnp
import numpy as np

UNITS = {14: (1, 1, 1, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def random_published_weights(depth, width, num_classes, seed=0, branch_gain=1.0):
  """Random weights in the published layout (norms near identity, a non-zero head).

  `branch_gain` scales the last norm of each residual branch. Trained BiT models keep it well
  below 1, which makes the network far less sensitive to rounding than gain 1, where merely
  rounding the input images to bfloat16 moves the logits by several percent.
  """
  rng = np.random.default_rng(seed)
  w = {}

  def conv(key, shape):
    w[f"{key}/standardized_conv2d/kernel"] = rng.normal(size=shape).astype(np.float32)

  def norm(key, c, gain=1.0):
    w[f"{key}/group_norm/gamma"] = (gain * (1 + 0.1 * rng.normal(size=c))).astype(np.float32)
    w[f"{key}/group_norm/beta"] = (0.1 * rng.normal(size=c)).astype(np.float32)

  conv("resnet/root_block", (7, 7, 3, 64 * width))
  cin = 64 * width
  for b, units in enumerate(UNITS[depth]):
    mid = 64 * width * 2**b
    for u in range(units):
      k = f"resnet/block{b + 1}/unit{u + 1:02d}"
      norm(f"{k}/a", cin)
      if u == 0:
        conv(f"{k}/a/proj", (1, 1, cin, 4 * mid))
      conv(f"{k}/a", (1, 1, cin, mid))
      norm(f"{k}/b", mid)
      conv(f"{k}/b", (3, 3, mid, mid))
      norm(f"{k}/c", mid, branch_gain)
      conv(f"{k}/c", (1, 1, mid, 4 * mid))
      cin = 4 * mid
  norm("resnet", cin)
  w["resnet/head/conv2d/kernel"] = (0.01 * rng.normal(size=(1, 1, cin, num_classes))).astype(np.float32)
  w["resnet/head/conv2d/bias"] = (0.1 * rng.normal(size=num_classes)).astype(np.float32)
  return w


def _ws_conv(x, kernel, stride, pad):
  mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
  var = kernel.var(axis=(0, 1, 2), keepdims=True)
  kernel = (kernel - mean) / jnp.sqrt(var + 1e-10)
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


def _gn(x, gamma, beta, groups=32, eps=1e-5):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  g = (g - mean) / jnp.sqrt(var + eps)
  return g.reshape(b, h, w, c) * gamma + beta


def forward(w, images):
  """Logits (B, K) of the published network with weights `w` on images (B, H, W, 3)."""
  x = _ws_conv(images, w["resnet/root_block/standardized_conv2d/kernel"], 2, 3)
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros, not -inf
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  b = 1
  while f"resnet/block{b}/unit01/a/group_norm/gamma" in w:
    u = 1
    while (k := f"resnet/block{b}/unit{u:02d}") + "/a/group_norm/gamma" in w:
      stride = 2 if (b > 1 and u == 1) else 1
      y = jax.nn.relu(_gn(x, w[f"{k}/a/group_norm/gamma"], w[f"{k}/a/group_norm/beta"]))
      proj = f"{k}/a/proj/standardized_conv2d/kernel"
      shortcut = _ws_conv(y, w[proj], stride, 0) if proj in w else x
      y = _ws_conv(y, w[f"{k}/a/standardized_conv2d/kernel"], 1, 0)
      y = jax.nn.relu(_gn(y, w[f"{k}/b/group_norm/gamma"], w[f"{k}/b/group_norm/beta"]))
      y = _ws_conv(y, w[f"{k}/b/standardized_conv2d/kernel"], stride, 1)
      y = jax.nn.relu(_gn(y, w[f"{k}/c/group_norm/gamma"], w[f"{k}/c/group_norm/beta"]))
      y = _ws_conv(y, w[f"{k}/c/standardized_conv2d/kernel"], 1, 0)
      x = shortcut + y
      u += 1
    b += 1
  x = jax.nn.relu(_gn(x, w["resnet/group_norm/gamma"], w["resnet/group_norm/beta"]))
  x = x.mean(axis=(1, 2))
  head = w["resnet/head/conv2d/kernel"][0, 0]
  return jnp.dot(x, head, precision=jax.lax.Precision.HIGHEST) + w["resnet/head/conv2d/bias"]


def group_norm_float64(x: np.ndarray, groups: int = 32, epsilon: float = 1e-5) -> np.ndarray:
  """BiT's GroupNorm of x (B, H, W, C) in float64, with scale 1 and bias 0: the exact answer."""
  grouped = x.astype(np.float64).reshape(*x.shape[:3], groups, -1)
  mean, var = grouped.mean((1, 2, 4), keepdims=True), grouped.var((1, 2, 4), keepdims=True)
  return ((grouped - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
