"""Few-shot linear evaluation: closed-form ridge regression on frozen features.

A cheap, deterministic read-out of representation quality during pre-training: take K examples
per class, fit a linear map from standardized features to +-1 class targets by regularized least
squares (no SGD, no hyper-parameters but `l2_reg`), and report test accuracy.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

# big_vision's few-shot evaluator: K per class, ridge strength, draws averaged.
DEFAULT_SHOTS = (1, 5, 10, 25)
# In units of the standardized features (each has unit variance over the training examples).
DEFAULT_L2_REG = 2.0**10
DEFAULT_SEEDS = 3
# Keeps features that are constant over the few training examples (dead ReLUs) at 0, not NaN.
_STD_EPS = 1e-6
# TPUs multiply float32 matrices in bfloat16 by default; a Gram matrix needs full precision.
_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


class LinearProbe(NamedTuple):
  """Standardization statistics and the fitted map: `logits = (x - mean) / std @ weights + bias`."""
  mean: jax.Array  # (D,)
  std: jax.Array  # (D,)
  weights: jax.Array  # (D, K)
  bias: jax.Array  # (K,)


@functools.partial(jax.jit, static_argnames="num_classes")
def fit_linear_probe(features: jax.Array, labels: jax.Array, num_classes: int,
                     l2_reg: float = DEFAULT_L2_REG) -> LinearProbe:
  """Fits `W = (X^T X + l2 I)^-1 X^T Y` on standardized features X (N, D) and targets Y (N, K).

  Y is +1 for the example's class and -1 elsewhere. Centering X makes the bias decouple from W:
  it is exactly the mean target, unregularized. With fewer examples than dimensions (the
  few-shot case) the same W is computed as `X^T (X X^T + l2 I)^-1 Y`, an N x N solve.

  Args:
    features: (N, D) frozen features of the training examples.
    labels: (N,) int class ids in [0, num_classes).
    num_classes: K.
    l2_reg: ridge strength; must be positive so the Cholesky factorization exists, and values
      far below 1 make the float32 solve ill-conditioned on correlated features.
  """
  features = features.astype(jnp.float32)
  mean = jnp.mean(features, axis=0)
  std = jnp.std(features, axis=0) + _STD_EPS
  x = (features - mean) / std
  y = 2.0 * jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) - 1.0
  num_examples, dim = x.shape
  if num_examples >= dim:
    gram = _matmul(x.T, x) + l2_reg * jnp.eye(dim)
    weights = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), _matmul(x.T, y))
  else:
    gram = _matmul(x, x.T) + l2_reg * jnp.eye(num_examples)
    weights = _matmul(x.T, jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), y))
  return LinearProbe(mean=mean, std=std, weights=weights, bias=jnp.mean(y, axis=0))


@functools.partial(jax.jit, static_argnames="num_classes")
def linear_probe_accuracy(train_features: jax.Array, train_labels: jax.Array,
                          test_features: jax.Array, test_labels: jax.Array, num_classes: int,
                          l2_reg: float = DEFAULT_L2_REG) -> jax.Array:
  """Top-1 accuracy on the test set of a ridge probe fitted on the training set.

  Args:
    train_features: (N, D) frozen features.
    train_labels: (N,) int class ids.
    test_features: (M, D) frozen features.
    test_labels: (M,) int class ids.
    num_classes: K.
    l2_reg: ridge strength, see `fit_linear_probe`.
  Returns:
    float32 scalar array (jit-compatible; `float()` it to log).
  """
  probe = fit_linear_probe(train_features, train_labels, num_classes, l2_reg)
  x = (test_features.astype(jnp.float32) - probe.mean) / probe.std
  logits = _matmul(x, probe.weights) + probe.bias
  return jnp.mean(jnp.argmax(logits, axis=-1) == test_labels)
