"""Specification of few-shot linear evaluation on frozen features."""

import numpy as np
import pytest

from big_transfer.training import fewshot

_CLASSES = 4


def _clustered(num_per_class, dim, seed, spread=0.1):
  """Features around one well-separated centre per class; returns (features, labels)."""
  rng = np.random.default_rng(seed)
  centres = 5.0 * np.random.default_rng(123).standard_normal((_CLASSES, dim))
  labels = np.repeat(np.arange(_CLASSES), num_per_class)
  features = centres[labels] + spread * rng.standard_normal((len(labels), dim))
  return features.astype(np.float32), labels


@pytest.mark.parametrize("shots, dim", [(50, 16), (5, 64)])  # primal and dual (N < D) solves
def test_separable_data_is_classified_perfectly(shots, dim):
  train_x, train_y = _clustered(shots, dim, seed=0)
  test_x, test_y = _clustered(20, dim, seed=1)
  accuracy = fewshot.linear_probe_accuracy(train_x, train_y, test_x, test_y, _CLASSES)
  assert float(accuracy) == 1.0


def test_random_labels_give_near_chance_accuracy():
  rng = np.random.default_rng(0)
  train_x, test_x = rng.standard_normal((400, 16)), rng.standard_normal((2000, 16))
  train_y, test_y = rng.integers(0, _CLASSES, 400), rng.integers(0, _CLASSES, 2000)
  accuracy = fewshot.linear_probe_accuracy(train_x, train_y, test_x, test_y, _CLASSES)
  assert abs(float(accuracy) - 1 / _CLASSES) < 0.05


def test_larger_l2_shrinks_weights():
  train_x, train_y = _clustered(10, 16, seed=0, spread=1.0)
  norms = [np.linalg.norm(fewshot.fit_linear_probe(train_x, train_y, _CLASSES, l2).weights)
           for l2 in (0.1, 10.0, 1000.0)]
  assert norms[0] > norms[1] > norms[2]


def test_bias_is_the_mean_target():
  train_x, train_y = _clustered(10, 16, seed=0)
  probe = fewshot.fit_linear_probe(train_x, train_y, _CLASSES, 1.0)
  np.testing.assert_allclose(probe.bias, np.full(_CLASSES, 2 / _CLASSES - 1), rtol=1e-6)
