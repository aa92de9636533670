"""Activation memory of a model's backward pass, counted from the program, not the compiler.

`jax.vjp` returns the backward function with everything the forward pass keeps for it (its
residuals); `jax.eval_shape` gives their shapes without running anything. What remat saves shows
up here on every backend. (XLA:CPU drops the optimization barriers `jax.checkpoint` relies on and
common-subexpression-eliminates the recomputation away, so its compiled memory analysis cannot
show remat; accelerator compilers keep them.)
"""

import jax
import jax.numpy as jnp
import numpy as np

from big_transfer import models


def residual_bytes(model, params, images: jax.ShapeDtypeStruct) -> int:
  """Bytes of the residuals `jax.vjp` keeps from `model`'s forward pass on `images`, applied to
  (abstract) `params` as the train step applies them (`models.split_parameter_work`)."""
  prepare, applied = models.split_parameter_work(model)

  def forward_and_backward(params, images):
    return jax.vjp(lambda prepared: applied.apply({"params": prepared}, images), prepare(params))

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
