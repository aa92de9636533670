"""Losses on dense targets (one-hot, MixUp-soft or multi-hot), and top-1 correctness.

All are computed in float32 whatever the logits' dtype: a bfloat16 log-sum-exp over 21k classes
loses the small differences the gradient is made of.
"""

import jax
import jax.numpy as jnp


def _check_shapes(logits: jax.Array, targets: jax.Array) -> None:
  if logits.ndim != 2 or logits.shape != targets.shape:
    raise ValueError("Expected logits and targets of one shape (batch, classes), got "
                     f"{logits.shape} and {targets.shape}; labels must be dense (one-hot).")


def _weighted_mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
  """Mean of (B,) values over examples with weight; 0 when all weights are 0 (a padding batch)."""
  if weights is None:
    return jnp.mean(per_example)
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array,
                          weights: jax.Array | None = None) -> jax.Array:
  """Mean over examples of `-sum_k targets[b, k] * log_softmax(logits)[b, k]`.

  Args:
    logits: (B, K) unnormalized scores.
    targets: (B, K) class distributions: one-hot, or soft (MixUp).
    weights: optional (B,) example weights, e.g. the eval mask (0 for padding).
  Returns:
    float32 scalar: the weighted mean over examples.
  """
  _check_shapes(logits, targets)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_example = -jnp.sum(targets.astype(jnp.float32) * log_probs, axis=-1)
  return _weighted_mean(per_example, weights)


def sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array,
                          weights: jax.Array | None = None) -> jax.Array:
  """Independent binary cross-entropy per class, summed over classes, mean over examples.

  For multi-label upstream data (JFT, ImageNet-21k). Summing over classes rather than averaging
  keeps the gradient of each class logit independent of the number of classes, so the learning
  rate tuned with softmax carries over; a mean would divide it by K (21,843 for ImageNet-21k).

  Args:
    logits: (B, K) unnormalized scores.
    targets: (B, K) per-class probabilities in [0, 1]: multi-hot, one-hot or soft.
    weights: optional (B,) example weights, e.g. the eval mask (0 for padding).
  Returns:
    float32 scalar: the weighted mean over examples.
  """
  _check_shapes(logits, targets)
  logits = logits.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  # log_sigmoid is a stable softplus: no overflow of exp for logits of either sign.
  per_class = -(targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))
  return _weighted_mean(jnp.sum(per_class, axis=-1), weights)


def top1_correct(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """(B,) float32: 1 where the top class of `logits` (B, K) is one of the true labels.

  A true label is a class whose target (B, K) is positive: the one class of a one-hot target, any
  of the classes of a multi-hot one (ImageNet-21k, JFT), as big_vision's classification
  evaluator counts it.
  """
  _check_shapes(logits, targets)
  predicted = jnp.argmax(logits, axis=-1)
  hit = jnp.take_along_axis(targets, predicted[:, None], axis=-1)[:, 0] > 0
  return hit.astype(jnp.float32)
