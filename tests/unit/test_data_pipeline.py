"""Training and evaluation streams on the built-in `bit_synthetic/downstream` data set.

10 classes, 1000 train and 500 test images of 64x64, prepared once per module in a temporary
data_dir, and once more written in 4 files per split. Several hosts are simulated in one process
through process_index / process_count.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from big_transfer import data
from big_transfer.data import streams, synthetic, tfds_source

DOWNSTREAM = "bit_synthetic/downstream"
NUM_FILES = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def sharded_data_dir(tmp_path_factory):
  """The same data set, each split written in NUM_FILES files."""
  data_dir = str(tmp_path_factory.mktemp("tfds_sharded"))
  tfds.builder(DOWNSTREAM, data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=NUM_FILES, try_download_gcs=False))
  return data_dir


def _cfg(data_dir, **kwargs):
  return data.InputConfig(dataset=DOWNSTREAM, data_dir=data_dir, crop=16, **kwargs)


def _digest(array: np.ndarray) -> bytes:
  return np.ascontiguousarray(array).tobytes()


def _take(batches, n):
  return [next(batches) for _ in range(n)]


def test_built_in_data_set_is_prepared_on_first_use(data_dir):
  info = data.dataset_info(_cfg(data_dir))
  assert tfds.builder(DOWNSTREAM, data_dir=data_dir).is_prepared()
  # The names the generator gives the ten downstream combinations, in label order.
  names = tuple(synthetic.class_name(c) for c in synthetic.class_combinations("downstream"))
  assert len(set(names)) == 10
  assert info == data.DatasetInfo(num_train_examples=1000, image_size=(64, 64), num_classes=10,
                                  class_names=names)


def test_dataset_info_counts_the_sliced_train_split(data_dir):
  assert data.dataset_info(_cfg(data_dir, train_split="train[:30%]")).num_train_examples == 300


def test_released_train_and_holdout_slices_split_the_train_split(data_dir):
  # The released recipes train on train[:98%] (train[:99%] for ImageNet) and hold out the rest.
  source = tfds_source.TfdsSource(_cfg(data_dir, train_split="train[:98%]"))
  images = lambda split: [_digest(example["image"]) for example in
                          source.eval_examples(split, 0, 1)[0].read(None).as_numpy_iterator()]
  train, holdout, whole = images("train[:98%]"), images("train[98%:]"), images("train")
  assert (len(train), len(holdout)) == (980, 20)
  assert sorted(train + holdout) == sorted(whole) and len(set(whole)) == 1000
  assert data.dataset_info(_cfg(data_dir, train_split="train[:98%]")).num_train_examples == 980


def test_dataset_info_counts_the_few_shot_draw(data_dir):
  assert data.dataset_info(_cfg(data_dir, examples_per_class=5)).num_train_examples == 50


@pytest.mark.parametrize("recipe", ["upstream", "finetune"])
def test_train_batches_hold_unit_range_crops_and_one_hot_labels(data_dir, recipe):
  batch = next(data.train_batches(_cfg(data_dir, recipe=recipe, precrop=20), 8, seed=0))
  assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["image"].max() - batch["image"].min() > 1.0  # Real pictures, not a constant.
  assert batch["label"].shape == (8, 10) and batch["label"].dtype == np.float32
  np.testing.assert_array_equal(np.sort(batch["label"], axis=1)[:, -1], np.ones(8))
  np.testing.assert_array_equal(batch["label"].sum(axis=1), np.ones(8))


def test_different_seeds_give_different_streams(data_dir):
  first = next(data.train_batches(_cfg(data_dir), 8, seed=0))
  second = next(data.train_batches(_cfg(data_dir), 8, seed=1))
  assert not np.array_equal(first["image"], second["image"])


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_host_shards_are_disjoint_and_complete_in_any_file_order(sharded_data_dir,
                                                                  process_count):
  source = tfds_source.TfdsSource(_cfg(sharded_data_dir))
  for file_seed in (None, tf.constant(5, tf.int64)):
    shards = []
    for index in range(process_count):
      shard = source.train_examples(index, process_count)
      shards.append([_digest(example["image"])
                     for example in shard.read(file_seed).as_numpy_iterator()])
      assert len(shards[-1]) == shard.num_examples
    everything = [digest for shard in shards for digest in shard]
    assert len(everything) == len(set(everything)) == 1000


def _file_of_each_image(data_dir) -> dict[bytes, int]:
  """The file of the train split that holds each image."""
  builder = tfds.builder(DOWNSTREAM, data_dir=data_dir)
  files = {}
  for number, instruction in enumerate(builder.info.splits["train"].file_instructions):
    images = tf.data.TFRecordDataset(instruction.filename).map(
        lambda record: tf.io.parse_single_example(
            record, {"image": tf.io.FixedLenFeature([], tf.string)})["image"])
    files.update((_digest(image), number) for image in images.as_numpy_iterator())
  return files


def test_each_epoch_reads_the_files_in_its_own_order(sharded_data_dir):
  file_of = _file_of_each_image(sharded_data_dir)
  assert sorted(set(file_of.values())) == list(range(NUM_FILES))
  source = tfds_source.TfdsSource(_cfg(sharded_data_dir))
  # With a buffer of 1 the stream shows the order in which the files are read.
  stream = streams.train_stream(source.train_examples(0, 1), 10, seed=3, process_index=0,
                                process_count=1, start=0, shuffle_buffer=1,
                                transform=lambda position, example: example["image"])
  images = [_digest(image) for image in stream.take(4 * 1000).as_numpy_iterator()]
  file_orders = []
  for epoch in range(4):
    epoch_images = images[epoch * 1000:(epoch + 1) * 1000]
    assert len(set(epoch_images)) == 1000  # Every example once per epoch.
    files = [file_of[image] for image in epoch_images]
    file_orders.append(tuple(sorted(set(files), key=files.index)))  # By first appearance.
  assert len(set(file_orders)) > 1, file_orders


def test_a_shuffle_buffer_larger_than_the_host_share_reads_each_example_once_per_epoch(data_dir):
  source = tfds_source.TfdsSource(_cfg(data_dir))
  stream = streams.train_stream(source.train_examples(1, 2), 10, seed=0, process_index=1,
                                process_count=2, start=0, shuffle_buffer=250_000,
                                transform=lambda position, example: example["image"])
  images = [_digest(image) for image in stream.take(2 * 500).as_numpy_iterator()]
  assert len(set(images[:500])) == len(set(images[500:])) == 500
  assert set(images[:500]) == set(images[500:]) and images[:500] != images[500:]


def _fewshot_images(data_dir, seed=3):
  source = tfds_source.TfdsSource(_cfg(data_dir, examples_per_class=4, fewshot_seed=seed))
  drawn = source.train_examples(0, 1)
  return collections.Counter((_digest(np.frombuffer(image, np.uint8)), int(label))
                             for image, label in zip(drawn.images, drawn.labels))


def test_few_shot_draw_is_the_same_across_runs_and_hosts(data_dir):
  source = tfds_source.TfdsSource(_cfg(data_dir, examples_per_class=4, fewshot_seed=3))
  single = _fewshot_images(data_dir)
  assert _fewshot_images(data_dir) == single
  for index in range(3):  # Every host holds the whole draw and reads its share of one stream.
    drawn = source.train_examples(index, 3)
    np.testing.assert_array_equal(drawn.labels, source.train_examples(0, 1).labels)
  assert _fewshot_images(data_dir, seed=4) != single


def test_few_shot_draws_k_examples_of_every_class(data_dir):
  drawn = _fewshot_images(data_dir)
  assert sum(drawn.values()) == len(drawn) == 40
  assert collections.Counter(label for _, label in drawn) == {c: 4 for c in range(10)}


def test_few_shot_larger_than_the_smallest_class_names_the_class(data_dir):
  first = data.dataset_info(_cfg(data_dir)).class_names[0]  # Every class has 100 examples.
  with pytest.raises(ValueError, match=f"class '{first}' \\(label 0\\) has: 100 examples"):
    data.train_batches(_cfg(data_dir, examples_per_class=101), 8, seed=0)


@pytest.mark.parametrize("files, fewshot, process_count", [
    (1, None, 2), (NUM_FILES, None, 2), (1, 5, 2), (1, 5, 3)],
    ids=["streamed_from_one_file", "streamed_from_4_files", "held_in_memory",
         "held_in_memory_3_hosts"])
def test_resuming_at_a_step_yields_the_uninterrupted_stream(data_dir, sharded_data_dir, files,
                                                            fewshot, process_count):
  # 16 examples per host and step; an epoch per host is 500 (1000 / 2) examples, or 50 / hosts
  # (few-shot), so step 33 (host example 528) lies in a later epoch than the one step 30
  # starts in.
  cfg = _cfg(sharded_data_dir if files > 1 else data_dir, examples_per_class=fewshot,
             mixup_alpha=0.4, shuffle_buffer=300)
  stream = lambda start: data.train_batches(cfg, 16 * process_count, seed=7, start_step=start,
                                            process_index=1, process_count=process_count)
  uninterrupted = _take(stream(0), 36)
  resumed = _take(stream(30), 6)
  for expected, actual in zip(uninterrupted[30:], resumed, strict=True):
    np.testing.assert_array_equal(actual["image"], expected["image"])
    np.testing.assert_array_equal(actual["label"], expected["label"])


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_eval_counts_every_example_once_across_hosts(data_dir, process_count):
  cfg = _cfg(data_dir)
  hosts = [list(data.eval_batches(cfg, 24, process_index=i, process_count=process_count))
           for i in range(process_count)]
  assert len({len(batches) for batches in hosts}) == 1  # Every host runs the same steps.
  seen = collections.Counter()
  for batches in hosts:
    for batch in batches:
      assert batch["image"].shape == (24 // process_count, 16, 16, 3)
      real = batch["mask"] == 1.0
      assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
      assert np.all(batch["image"][~real] == 0) and np.all(batch["label"][~real] == 0)
      seen.update(_digest(image) + _digest(label)
                  for image, label in zip(batch["image"][real], batch["label"][real]))
  assert sum(seen.values()) == 500
  single = [batch for batch in data.eval_batches(cfg, 24)]
  assert seen == collections.Counter(
      _digest(image) + _digest(label) for batch in single
      for image, label, mask in zip(batch["image"], batch["label"], batch["mask"]) if mask)


def test_mixup_targets_sum_to_one_and_mix_images_with_one_lambda(data_dir):
  plain = next(data.train_batches(_cfg(data_dir), 16, seed=5))
  mixed = next(data.train_batches(_cfg(data_dir, mixup_alpha=0.5), 16, seed=5))
  np.testing.assert_allclose(mixed["label"].sum(axis=1), np.ones(16), rtol=1e-6)
  # Each example is mixed with its neighbour: recover lambda from the targets, check the images.
  own, neighbour = plain["label"], np.roll(plain["label"], 1, axis=0)
  lam = np.sum((mixed["label"] - neighbour) * (own - neighbour)) / np.sum((own - neighbour) ** 2)
  assert 0.0 <= lam <= 1.0
  np.testing.assert_allclose(mixed["label"], lam * own + (1 - lam) * neighbour, atol=1e-6)
  np.testing.assert_allclose(
      mixed["image"], lam * plain["image"] + (1 - lam) * np.roll(plain["image"], 1, axis=0),
      atol=1e-5)


def test_multilabel_without_a_labels_feature_uses_one_hot_labels(data_dir):
  batch = next(data.train_batches(_cfg(data_dir, multilabel=True), 8, seed=0))
  np.testing.assert_array_equal(batch["label"].sum(axis=1), np.ones(8))


def test_global_batch_not_divisible_by_hosts_names_both_numbers(data_dir):
  with pytest.raises(ValueError, match="global batch size 10 .* number of processes 4"):
    data.train_batches(_cfg(data_dir), 10, seed=0, process_index=0, process_count=4)
