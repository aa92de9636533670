"""The built-in `bit_synthetic` data set: deterministic, and built for transfer."""

import numpy as np

from big_transfer.data import synthetic


def _examples(config, split, n):
  builder = synthetic.BitSynthetic(config=config, data_dir="/nonexistent/not/written")
  generated = builder._generate_examples(split, per_class=1)  # One image of every class.
  return [example for _, example in list(generated)[:n]]


def test_examples_are_a_pure_function_of_config_split_and_index():
  first, second = _examples("downstream", "train", 5), _examples("downstream", "train", 5)
  for a, b in zip(first, second, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["label"] == b["label"]
  test = _examples("downstream", "test", 5)
  assert not np.array_equal(first[0]["image"], test[0]["image"])


def test_images_are_small_rgb_pictures():
  image = _examples("upstream", "train", 1)[0]["image"]
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  assert image.std() > 10


def test_upstream_and_downstream_share_primitives_but_no_class():
  upstream = set(synthetic.class_combinations("upstream"))
  downstream = set(synthetic.class_combinations("downstream"))
  assert len(upstream) == 90 and len(downstream) == 10
  assert not upstream & downstream
  for position in range(3):  # shape, colour, texture
    assert {c[position] for c in downstream} <= {c[position] for c in upstream}


def test_class_names_are_unique_and_readable():
  names = [synthetic.class_name(c) for c in synthetic.COMBINATIONS]
  assert len(set(names)) == 100
  assert synthetic.class_name(("disk", "red", "solid")) == "red_solid_disk"
