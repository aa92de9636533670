"""Activation memory of a model's backward pass, counted from the program, not the compiler.

`jax.vjp` returns the backward function with everything the forward pass keeps for it (its
residuals); `jax.eval_shape` gives their shapes without running anything. The count is the same
on every backend and bounds what a compiler keeps: XLA:CPU's compiled temporaries barely move with
remat (R50x1: -5% with `unit`, +1% with `stage`), and the TPU compiler keeps far less than this
even without remat (BENCHMARKS.md).
"""

import jax
import jax.numpy as jnp
import numpy as np


def residual_bytes(model, params, images: jax.ShapeDtypeStruct) -> int:
  """Bytes of the residuals `jax.vjp` keeps from `model`'s forward pass on `images`, applied to
  (abstract) `params`."""
  def forward_and_backward(params, images):
    return jax.vjp(lambda params: model.apply({"params": params}, images), params)

  _, backward = jax.eval_shape(forward_and_backward, params, images)
  return sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(backward))


def activation_bytes(model, params, batch: int, resolution: int) -> int:
  """Bytes the backward pass keeps for `batch` examples beyond what it keeps for the parameters.

  The residuals are (per-example activations) x batch + (parameter-sized arrays such as the
  standardized kernels); the difference between `2 * batch` and `batch` examples isolates the
  first term.
  """
  shape = lambda b: jax.ShapeDtypeStruct((b, resolution, resolution, 3), jnp.float32)
  return (residual_bytes(model, params, shape(2 * batch))
          - residual_bytes(model, params, shape(batch)))
