"""Few-shot draws and processes, as pure functions of their inputs."""

import numpy as np
import pytest

from big_transfer.data import sampling


def test_few_shot_draw_is_seeded_and_keeps_k_per_class():
  labels = np.repeat(np.arange(4), 10)
  drawn = sampling.select_per_class(labels, 3, seed=1)
  np.testing.assert_array_equal(drawn, sampling.select_per_class(labels, 3, seed=1))
  assert not np.array_equal(drawn, sampling.select_per_class(labels, 3, seed=2))
  np.testing.assert_array_equal(np.bincount(labels[drawn]), [3, 3, 3, 3])


def test_few_shot_draw_larger_than_the_smallest_class_names_it_and_its_count():
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
  with pytest.raises(ValueError, match="class 'bee' \\(label 1\\) has: 2 examples"):
    sampling.select_per_class(labels, 3, seed=0, class_names=("ant", "bee", "cat"))


def test_a_class_absent_from_the_split_is_named():
  with pytest.raises(ValueError, match="class 'cat' \\(label 2\\) has: 0 examples"):
    sampling.select_per_class(np.array([0, 0, 1, 1]), 1, seed=0, class_names=("ant", "bee", "cat"))


def test_process_index_outside_the_process_count_is_rejected():
  with pytest.raises(ValueError, match="got 4 of 4"):
    sampling.process(4, 4)
