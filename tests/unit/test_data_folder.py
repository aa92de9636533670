"""Image folders (`folder:/path`): layouts, JPEG and PNG, unreadable files, and bad folders."""

import collections
import logging

import numpy as np
import pytest
import tensorflow as tf

from big_transfer import data
from big_transfer.data import folder_source, streams

CLASSES = ("ant", "bee", "cat")  # Written in another order below: labels must sort by name.


def _write_image(path, height, width, seed, fmt):
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  encode = tf.io.encode_jpeg if fmt == "jpeg" else tf.io.encode_png
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encode(pixels).numpy())


def _write_classes(folder, per_class=4, size=(30, 40)):
  """Writes per_class images per class, alternating JPEG and PNG."""
  for label, name in enumerate(reversed(CLASSES)):
    for i in range(per_class):
      fmt = "jpeg" if i % 2 == 0 else "png"
      suffix = ".jpg" if fmt == "jpeg" else ".PNG"
      _write_image(folder / name / f"{i}{suffix}", *size, seed=10 * label + i, fmt=fmt)


def _cfg(folder, **kwargs):
  return data.InputConfig(dataset=f"folder:{folder}", crop=16, **kwargs)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
  """ant/, bee/, cat/ with 4 images each (2 JPEG, 2 PNG) and a file that is not an image."""
  folder = tmp_path_factory.mktemp("classes")
  _write_classes(folder)
  (folder / "ant" / "notes.txt").write_text("not an image")
  return folder


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
  """train/ (6 per class, 30x40) and test/ (2 per class) sub-folders of class folders."""
  folder = tmp_path_factory.mktemp("splits")
  _write_classes(folder / "train", per_class=6)
  _write_classes(folder / "test", per_class=2)
  return folder


def test_labels_follow_sorted_class_folder_names(class_folder):
  info = data.dataset_info(_cfg(class_folder))
  assert info.class_names == CLASSES
  assert info.num_classes == 3
  assert info.num_train_examples == 12  # notes.txt is not an image.


def test_image_size_is_the_median_of_the_images(tmp_path):
  for i, (name, height) in enumerate([("a", 20), ("a", 30), ("b", 50)]):
    _write_image(tmp_path / name / f"{i}.png", height, 2 * height, seed=i, fmt="png")
  assert data.dataset_info(_cfg(tmp_path)).image_size == (30, 60)


def test_jpeg_and_png_images_are_batched_with_their_labels(class_folder):
  batches = list(data.eval_batches(_cfg(class_folder, eval_split="train"), 12))
  assert len(batches) == 1
  batch = batches[0]
  assert batch["image"].shape == (12, 16, 16, 3)
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  np.testing.assert_array_equal(batch["mask"], np.ones(12))
  # The eval order of one host is the sorted folder order: 4 images of each class in turn.
  np.testing.assert_array_equal(batch["label"].argmax(axis=1), np.repeat([0, 1, 2], 4))


@pytest.mark.parametrize("recipe", ["upstream", "finetune"])
def test_training_crops_jpeg_and_png_images(class_folder, recipe):
  batch = next(data.train_batches(_cfg(class_folder, recipe=recipe, precrop=24), 12, seed=0))
  assert batch["image"].shape == (12, 16, 16, 3)
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  # One epoch is exactly one batch here: every image appears once.
  np.testing.assert_array_equal(np.sort(batch["label"].argmax(axis=1)), np.repeat([0, 1, 2], 4))


def test_unreadable_image_is_skipped_counted_and_named_in_a_warning(tmp_path, caplog):
  _write_classes(tmp_path)
  broken = tmp_path / "bee" / "broken.jpg"
  broken.write_bytes((tmp_path / "bee" / "0.jpg").read_bytes()[:200])  # A truncated JPEG.
  with caplog.at_level(logging.WARNING):
    info = data.dataset_info(_cfg(tmp_path))
  assert info.skipped_images == 1
  assert info.num_train_examples == 12
  assert any(str(broken) in record.getMessage() for record in caplog.records)
  batch = next(data.train_batches(_cfg(tmp_path), 12, seed=0))  # Never reads the broken file.
  assert batch["image"].shape == (12, 16, 16, 3)


def test_train_and_test_sub_folders_are_the_splits(split_folder):
  info = data.dataset_info(_cfg(split_folder))
  assert info.class_names == CLASSES
  assert info.num_train_examples == 18
  masks = [b["mask"] for b in data.eval_batches(_cfg(split_folder), 4)]
  assert np.concatenate(masks).sum() == 6


def test_folder_splits_take_tfds_style_slices(split_folder):
  assert data.dataset_info(_cfg(split_folder, train_split="train[:50%]")).num_train_examples == 9
  assert data.dataset_info(_cfg(split_folder, train_split="train[-5:]")).num_train_examples == 5


def test_released_train_and_holdout_slices_split_a_folder(tmp_path):
  _write_classes(tmp_path, per_class=17, size=(8, 8))  # 51 images: 98% is 50 of them.
  source = folder_source.FolderSource(_cfg(tmp_path, train_split="train[:98%]"))
  paths = lambda split: list(source.eval_examples(split, 0, 1)[0].images)
  train, holdout = paths("train[:98%]"), paths("train[98%:]")
  assert (len(train), len(holdout)) == (50, 1)
  assert sorted(train + holdout) == sorted(paths("train"))
  assert data.dataset_info(_cfg(tmp_path, train_split="train[:98%]")).num_train_examples == 50


def test_few_shot_draw_from_a_folder_keeps_k_per_class(split_folder):
  cfg = _cfg(split_folder, examples_per_class=2)
  assert data.dataset_info(cfg).num_train_examples == 6
  batch = next(data.train_batches(cfg, 6, seed=0))
  np.testing.assert_array_equal(np.sort(batch["label"].argmax(axis=1)), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("process_count", [1, 2, 4])
@pytest.mark.parametrize("examples_per_class", [None, 2], ids=["all", "few_shot"])
def test_every_image_is_read_equally_often_across_hosts(split_folder, process_count,
                                                        examples_per_class):
  # 18 images (6 few-shot) over 4 hosts: unequal shares, yet equal reading.
  source = folder_source.FolderSource(_cfg(split_folder, examples_per_class=examples_per_class))
  counts = collections.Counter()
  for index in range(process_count):
    stream = streams.train_stream(source.train_examples(index, process_count), 3, seed=0,
                                  process_index=index, process_count=process_count, start=0,
                                  shuffle_buffer=1,
                                  transform=lambda position, example: example["image"])
    counts.update(stream.take(40).as_numpy_iterator())
  assert len(counts) == 3 * (examples_per_class or 6)
  assert max(counts.values()) - min(counts.values()) <= 1


def test_missing_folder_is_named(tmp_path):
  with pytest.raises(ValueError, match=f"Image folder {tmp_path / 'nope'} does not exist"):
    data.dataset_info(_cfg(tmp_path / "nope"))


def test_folder_without_class_folders_says_what_layout_is_expected(tmp_path):
  with pytest.raises(ValueError, match="has no sub-folders. Put the images of each class"):
    data.dataset_info(_cfg(tmp_path))


def test_class_folder_without_images_is_named(tmp_path):
  _write_classes(tmp_path)
  (tmp_path / "dog").mkdir()
  (tmp_path / "dog" / "readme.txt").write_text("no pictures")
  with pytest.raises(ValueError, match=f"Class folder {tmp_path / 'dog'} holds no images"):
    data.dataset_info(_cfg(tmp_path))


def test_missing_eval_split_of_a_class_folder_layout_suggests_slicing(class_folder):
  with pytest.raises(ValueError, match="has no split 'test'.*eval_split='train\\[90%:\\]'"):
    data.eval_batches(_cfg(class_folder), 4)
