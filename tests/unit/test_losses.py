"""Specification of the losses against NumPy references computed here."""

import jax.numpy as jnp
import numpy as np
import pytest

from big_transfer.training import losses

_LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 4.0, 1.0]], np.float32)
_ONE_HOT = np.eye(3, dtype=np.float32)[[0, 2, 0]]


def _np_log_softmax(x):
  shifted = x.astype(np.float64) - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_softmax_xent(logits, targets):
  return -(targets * _np_log_softmax(logits)).sum(-1)


def _np_sigmoid_xent(logits, targets):
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(-1)


def test_softmax_cross_entropy_matches_numpy():
  got = losses.softmax_cross_entropy(jnp.asarray(_LOGITS), jnp.asarray(_ONE_HOT))
  np.testing.assert_allclose(got, _np_softmax_xent(_LOGITS, _ONE_HOT).mean(), rtol=1e-6)


def test_softmax_cross_entropy_soft_mixup_targets():
  soft = 0.9 * _ONE_HOT + 0.1 * _ONE_HOT[::-1]
  got = losses.softmax_cross_entropy(jnp.asarray(_LOGITS), jnp.asarray(soft))
  np.testing.assert_allclose(got, _np_softmax_xent(_LOGITS, soft).mean(), rtol=1e-6)


def test_softmax_cross_entropy_weights_mask_out_examples():
  weights = np.array([1.0, 0.0, 1.0], np.float32)
  got = losses.softmax_cross_entropy(jnp.asarray(_LOGITS), jnp.asarray(_ONE_HOT),
                                     jnp.asarray(weights))
  np.testing.assert_allclose(got, _np_softmax_xent(_LOGITS, _ONE_HOT)[[0, 2]].mean(), rtol=1e-6)


def test_all_zero_weights_give_zero_not_nan():
  got = losses.softmax_cross_entropy(jnp.asarray(_LOGITS), jnp.asarray(_ONE_HOT), jnp.zeros(3))
  assert float(got) == 0.0


def test_sigmoid_cross_entropy_sums_classes_and_averages_examples():
  multi_hot = np.array([[1, 1, 0], [0, 0, 1], [0, 1, 1]], np.float32)
  got = losses.sigmoid_cross_entropy(jnp.asarray(_LOGITS), jnp.asarray(multi_hot))
  np.testing.assert_allclose(got, _np_sigmoid_xent(_LOGITS, multi_hot).mean(), rtol=1e-6)


def test_sigmoid_cross_entropy_weights_mask_out_examples():
  weights = np.array([0.0, 1.0, 1.0], np.float32)
  got = losses.sigmoid_cross_entropy(jnp.asarray(_LOGITS), jnp.asarray(_ONE_HOT),
                                     jnp.asarray(weights))
  np.testing.assert_allclose(got, _np_sigmoid_xent(_LOGITS, _ONE_HOT)[1:].mean(), rtol=1e-6)


@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.sigmoid_cross_entropy])
def test_large_logits_are_finite_and_exact(loss):
  logits = jnp.array([[1e4, -1e4], [-1e4, 1e4]], jnp.float32)
  targets = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  # Example 0 is right with a margin of 2e4 (loss 0), example 1 wrong by it (loss 2e4).
  np.testing.assert_allclose(loss(logits, targets), 1e4, rtol=1e-6)


@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.sigmoid_cross_entropy])
def test_bfloat16_logits_give_float32_loss(loss):
  got = loss(jnp.asarray(_LOGITS, jnp.bfloat16), jnp.asarray(_ONE_HOT))
  assert got.dtype == jnp.float32


def test_top1_is_a_hit_when_the_top_class_is_the_one_hot_label():
  predicted = np.argmax(_LOGITS, axis=-1)
  one_hot = np.eye(3, dtype=np.float32)[[predicted[0], (predicted[1] + 1) % 3, predicted[2]]]
  np.testing.assert_array_equal(losses.top1_correct(jnp.asarray(_LOGITS), jnp.asarray(one_hot)),
                                [1.0, 0.0, 1.0])


def test_top1_is_a_hit_when_the_top_class_is_any_of_the_multi_hot_labels():
  logits = np.array([[0.1, 3.0, 0.2, 0.0], [2.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 5.0]])
  # The hits' top class is one of their labels but not their first one (argmax of the targets).
  multi_hot = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 1]], np.float32)
  np.testing.assert_array_equal(losses.top1_correct(jnp.asarray(logits), jnp.asarray(multi_hot)),
                                [1.0, 0.0, 1.0])


def test_mismatched_shapes_are_rejected():
  with pytest.raises(ValueError, match=r"\(3, 3\) and \(3,\)"):
    losses.softmax_cross_entropy(jnp.asarray(_LOGITS), jnp.array([0, 2, 0]))
