"""Evaluator scoring on hand-made logits and labels, against NumPy written from the references'
rules: A/R masking and the map back, ReaL's exclusions and multi-label hits, ObjectNet's
restriction, the 21k -> 1k map; and the names configs use."""

import jax.numpy as jnp
import numpy as np
import pytest

from big_transfer import errors
from big_transfer.data import class_lists, eval_sets
from big_transfer.training import evaluators

C = class_lists.IMAGENET_CLASSES
ALL = np.ones(C, bool)
IDENTITY = np.eye(C, dtype=bool)


def _one_hot(labels) -> np.ndarray:
  return np.eye(C, dtype=np.float32)[labels]


def _scores(logits, labels, shown=ALL, accepts=IDENTITY, mask=None, eval_set="imagenet2012"):
  mask = np.ones(len(logits), np.float32) if mask is None else mask
  sums = evaluators.pass_sums(logits, labels, mask, accepts, shown)
  return evaluators.results(eval_sets.parse(eval_set), sums, shown)


def test_the_shipped_subsets_are_200_ascending_imagenet_classes():
  for name in class_lists.SUBSETS:
    indices = class_lists.subset_indices(name)
    assert len(indices) == 200 and np.all(np.diff(indices) > 0) and indices[-1] < C
  assert class_lists.subset_indices("imagenet_a")[:3].tolist() == [6, 11, 13]


def test_imagenet_a_takes_the_argmax_over_its_200_classes_and_maps_it_back():
  shown = np.zeros(C, bool)
  shown[class_lists.subset_indices("imagenet_a")] = True
  outside = int(np.flatnonzero(~shown)[0])        # class 0, not an ImageNet-A class
  inside = class_lists.subset_indices("imagenet_a")[[0, 1, 2]]
  logits = np.zeros((3, C), np.float32)
  logits[:, outside] = 10.0                       # the 1000-way argmax of every example
  logits[0, inside[0]] = 5.0                      # the 200-way argmax of example 0: right
  logits[1, inside[2]] = 5.0                      # example 1: wrong (its label is inside[1])
  logits[2, inside[2]] = 5.0                      # example 2: right
  labels = _one_hot([inside[0], inside[1], inside[2]])
  result = _scores(logits, labels, shown, eval_set="imagenet_a")
  assert result["accuracy"] == pytest.approx(2 / 3)
  assert result["accuracy_1000way"] == 0.0        # class 0 wins every unmasked argmax
  assert result["classes"] == 200 and result["examples"] == 3


def test_real_excludes_empty_sets_and_counts_any_label_of_a_set_as_a_hit():
  logits = np.zeros((4, C), np.float32)
  logits[np.arange(4), [7, 8, 9, 3]] = 1.0
  labels = np.zeros((4, C), np.float32)
  labels[0, [1, 7]] = 1.0                         # top class 7 in {1, 7}: hit
  labels[1, [8]] = 1.0                            # hit
  labels[2, [1, 2]] = 1.0                         # top class 9 not in {1, 2}: miss
  # Example 3's set is empty: excluded, whatever it predicts.
  result = _scores(logits, labels, eval_set="imagenet2012_real")
  assert result["examples"] == 3 and result["excluded"] == 1
  assert result["accuracy"] == pytest.approx(2 / 3)


def test_padding_counts_neither_as_an_example_nor_as_excluded():
  logits = _one_hot([1, 2, 3]) * 5
  result = _scores(logits, _one_hot([1, 2, 0]) * np.array([[1], [1], [0]]),
                   mask=np.array([1, 1, 0], np.float32), eval_set="imagenet2012_real")
  assert result == {"accuracy": 1.0, "top5": 1.0, "examples": 2, "excluded": 0}


def test_top5_is_a_hit_when_any_of_the_five_highest_logits_is_accepted():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((64, C)).astype(np.float32)
  labels = rng.integers(0, C, 64)
  order = np.argsort(-logits, axis=1)
  labels[:20] = order[:20, 3]                     # 4th highest: a top-5 hit, a top-1 miss
  labels[20:30] = order[20:30, 0]                 # top-1 hits
  expected_top5 = np.mean([labels[i] in order[i, :5] for i in range(64)])
  result = _scores(logits, _one_hot(labels))
  assert result["top5"] == pytest.approx(expected_top5)
  assert result["accuracy"] == pytest.approx(np.mean(labels == order[:, 0]))


def test_objectnet_restricts_to_the_mapped_classes_and_accepts_each_class_set():
  # Three ObjectNet classes -> ImageNet {5}, {6, 7} and {9}: four shown classes.
  accepts = np.zeros((3, C), bool)
  accepts[0, 5] = accepts[1, [6, 7]] = accepts[2, 9] = True
  shown = accepts.any(axis=0)
  logits = np.zeros((3, C), np.float32)
  logits[:, 100] = 9.0                            # outside the mapping: never predicted
  logits[0, 5] = logits[1, 7] = logits[2, 6] = 1.0
  labels = np.eye(3, dtype=np.float32)            # ObjectNet classes 0, 1, 2
  result = _scores(logits, labels, shown, accepts, eval_set="objectnet:/x")
  assert result["accuracy"] == pytest.approx(2 / 3)  # 5 in {5}, 7 in {6, 7}; 6 not in {9}
  assert result["classes"] == 4 and result["accuracy_1000way"] == 0.0


def test_the_21k_map_moves_each_imagenet_class_logit_to_its_1k_place():
  index = class_lists.label_map_index("i21k_to_i1k")
  synsets21k = class_lists.imagenet21k_synsets()
  assert len(synsets21k) == class_lists.IMAGENET21K_CLASSES and index.shape == (C,)
  # Every 1k class but teddy bear (absent from ImageNet-21k) has the logit of its WordNet id.
  missing = np.flatnonzero(index < 0)
  assert [class_lists.imagenet_synsets()[i] for i in missing] == ["n04399382"]
  for c in (0, 1, 500, 999):
    assert synsets21k[index[c]] == class_lists.imagenet_synsets()[c]
  rng = np.random.default_rng(1)
  logits21k = rng.standard_normal((4, class_lists.IMAGENET21K_CLASSES)).astype(np.float32)
  mapped = np.asarray(evaluators.map_logits(jnp.asarray(logits21k), index))
  expected = np.where(index >= 0, logits21k[:, np.maximum(index, 0)], -np.inf)
  np.testing.assert_array_equal(mapped, expected)
  assert np.all(mapped[:, missing] == -np.inf)


def test_evaluator_names_parse_and_bad_ones_say_what_exists():
  assert eval_sets.parse("imagenet_v2").dataset == "imagenet_v2/matched-frequency"
  assert eval_sets.parse("imagenet_v2:topimages").dataset == "imagenet_v2/topimages"
  assert eval_sets.parse("imagenet2012_minival").split == "train[99%:]"
  objectnet = eval_sets.parse("objectnet:/data/objectnet-1.0")
  assert (objectnet.name, objectnet.folder) == ("objectnet", "/data/objectnet-1.0")
  with pytest.raises(errors.ConfigError, match="Did you mean 'imagenet_r'"):
    eval_sets.parse("imagenet-r")
  with pytest.raises(errors.ConfigError, match="threshold-0.7"):
    eval_sets.parse("imagenet_v2:threshold-0.5")
  with pytest.raises(errors.ConfigError, match="objectnet:DIR"):
    eval_sets.parse("objectnet")
  with pytest.raises(errors.ConfigError, match="i21k_to_i1k"):
    evaluators.check(("imagenet2012",), "i22k")
  with pytest.raises(errors.ConfigError, match="tuple of evaluator names"):
    evaluators.check("imagenet2012", "")
