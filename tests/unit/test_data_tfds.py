"""TFDS sources: real feature specs through `tfds.testing.mock_data` (see tfds_metadata.py), and
the advice on bad names."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_metadata
from big_transfer import data

NUM_EXAMPLES = 12


@pytest.fixture
def mocked(tmp_path):
  """Mocks TFDS for data sets whose metadata the test writes with `write(name, **splits)`."""
  write = lambda name, **splits: tfds_metadata.write_metadata(tmp_path, name, splits)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    yield write


def _cfg(dataset, **kwargs):
  return data.InputConfig(dataset=dataset, data_dir="/unused/by/mock", crop=24, **kwargs)


def test_cifar10_info_comes_from_its_metadata_and_fixed_image_shape(mocked):
  mocked("cifar10", train=NUM_EXAMPLES, test=NUM_EXAMPLES)
  info = data.dataset_info(_cfg("cifar10"))
  assert info.num_train_examples == NUM_EXAMPLES
  assert info.image_size == (32, 32)
  assert info.num_classes == 10
  assert len(info.class_names) == 10


def test_imagenet2012_image_size_comes_from_the_dataset_table(mocked):
  mocked("imagenet2012", train=NUM_EXAMPLES, validation=NUM_EXAMPLES)
  info = data.dataset_info(_cfg("imagenet2012", train_split="train[:50%]"))
  assert info.num_train_examples == NUM_EXAMPLES // 2
  assert info.image_size == (375, 500)  # The feature shape is (None, None, 3).
  assert info.num_classes == 1000


@pytest.mark.parametrize("name, eval_split", [("cifar10", "test"), ("imagenet2012", "validation")])
def test_train_batches_of_real_feature_specs_are_unit_range_images_and_one_hot_labels(
    mocked, name, eval_split):
  mocked(name, train=NUM_EXAMPLES, **{eval_split: NUM_EXAMPLES})
  batch = next(data.train_batches(_cfg(name), global_batch_size=8, seed=0))
  num_classes = data.dataset_info(_cfg(name)).num_classes
  assert batch["image"].shape == (8, 24, 24, 3) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0
  assert batch["label"].shape == (8, num_classes)
  np.testing.assert_array_equal(batch["label"].sum(axis=1), np.ones(8))


@pytest.mark.parametrize("name, eval_split", [("cifar10", "test"), ("imagenet2012", "validation")])
def test_eval_batches_of_real_feature_specs_mask_the_padding(mocked, name, eval_split):
  mocked(name, train=NUM_EXAMPLES, **{eval_split: NUM_EXAMPLES})
  batches = list(data.eval_batches(_cfg(name, eval_split=eval_split), global_batch_size=8))
  assert [b["image"].shape for b in batches] == [(8, 24, 24, 3)] * 2
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]),
                                [1.0] * NUM_EXAMPLES + [0.0] * 4)


def test_multilabel_reads_the_labels_sequence_as_multi_hot(mocked):
  mocked("voc/2007", train=NUM_EXAMPLES, test=NUM_EXAMPLES)
  batch = next(data.train_batches(_cfg("voc/2007", multilabel=True), global_batch_size=8, seed=0))
  assert batch["label"].shape == (8, 20)
  assert set(np.unique(batch["label"])) == {0.0, 1.0}
  assert batch["label"].sum(axis=1).max() > 1  # Mock examples carry several labels each.


def test_unknown_name_suggests_close_names_and_how_to_prepare(tmp_path):
  with pytest.raises(ValueError, match="TFDS has no data set 'cifar1O'") as error:
    data.dataset_info(data.InputConfig(dataset="cifar1O", data_dir=str(tmp_path)))
  message = str(error.value)
  assert "Did you mean 'cifar10'" in message
  assert str(tmp_path) in message
  assert f"tfds build cifar1O --data_dir={tmp_path}" in message
  assert "--manual_dir" in message


def test_known_but_unprepared_data_set_says_how_to_prepare_it_without_downloading(tmp_path):
  with pytest.raises(ValueError, match="'cifar10' is not prepared in data_dir") as error:
    data.dataset_info(data.InputConfig(dataset="cifar10", data_dir=str(tmp_path)))
  assert f"tfds build cifar10 --data_dir={tmp_path}" in str(error.value)
  assert list(tmp_path.iterdir()) == []  # Nothing was downloaded or written.


def test_unprepared_imagenet_explains_the_manual_download(tmp_path):
  with pytest.raises(ValueError, match="--manual_dir=") as error:
    data.dataset_info(data.InputConfig(dataset="imagenet2012", data_dir=str(tmp_path)))
  assert "ILSVRC2012_img_train.tar" in str(error.value)


def test_image_size_of_a_data_set_outside_the_table_is_measured(mocked):
  mocked("food101", train=NUM_EXAMPLES, validation=NUM_EXAMPLES)
  height, width = data.dataset_info(_cfg("food101")).image_size
  assert 5 <= height < 50 and 5 <= width < 50  # mock_data draws image sides in [5, 50).
