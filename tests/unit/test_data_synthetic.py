"""The built-in `bit_synthetic` data set: deterministic, and built for transfer."""

import hashlib

import numpy as np

from big_transfer.data import dataset_table, synthetic


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


def test_render_with_mask_keeps_the_images_of_the_data_set():
  combo, seed = synthetic.COMBINATIONS[7], [0, 0, 3]
  image, _ = synthetic.render_with_mask(combo, np.random.default_rng(seed))
  np.testing.assert_array_equal(image, synthetic.render(combo, np.random.default_rng(seed)))
  # The image this draw gave before masks existed: the prepared data set does not change.
  assert hashlib.sha256(image.tobytes()).hexdigest() == (
      "3971d33ccb5747625be67f6bc40cf60c4db4c4248d13f891c67ffaad7c0e9e98")


def test_the_mask_covers_the_object_and_only_it():
  for shape in synthetic.SHAPES:
    combo = (shape, "red", "solid")
    image, mask = synthetic.render_with_mask(combo, np.random.default_rng(5))
    assert mask.shape == (64, 64) and mask.dtype == bool and 50 < mask.sum() < 64 * 64 / 2
    red = image[..., 0].astype(np.float32)
    inside, outside = red[mask].mean(), red[~mask].mean()
    # The object is drawn red (220) with a gain in [0.8, 1.1]; the background is below 120.
    assert 0.75 * 220 < inside < 1.15 * 220 and outside < 130, (shape, inside, outside)


def test_the_table_knows_the_prepared_sets_facts_without_preparing_it(synthetic_data_dir):
  from big_transfer import data  # noqa: PLC0415  (the pipeline imports TensorFlow)
  for variant in ("upstream", "downstream"):
    facts = dataset_table.find(f"bit_synthetic/{variant}")
    prepared = data.dataset_info(data.InputConfig(dataset=f"bit_synthetic/{variant}",
                                                  data_dir=synthetic_data_dir))
    assert facts.num_classes == prepared.num_classes
    assert facts.train_examples == prepared.num_train_examples
    assert facts.image_size == prepared.image_size
  assert dataset_table.find("bit_synthetic/sideways") is None
