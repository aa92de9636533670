"""VTAB-1k tasks (big_transfer/data/vtab.py) on the real TFDS builders, with mocked data.

Each test writes the metadata of the real TFDS data set (its real split names and sizes) into a
temporary data_dir; `tfds.testing.mock_data` then serves examples of the real feature specs: random
ones, or the hand-made ones of `_serve` when a test needs to know each example's label.
Expected labels and split sizes are the benchmark's (google-research/task_adaptation and its data
tests), worked out by hand, not computed by the code under test.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

import cli
import tfds_metadata
from big_transfer import data, errors
from big_transfer.data import dataset_table, tfds_source, vtab

NUM_EXAMPLES = 12

# The splits of each TFDS data set as TFDS prepares it (the data the benchmark reads).
TFDS_SPLITS = {
    "caltech101": {"train": 3060, "test": 6084},
    "cifar100": {"train": 50_000, "test": 10_000},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet": {"train": 3680, "test": 3669},
    "sun397/tfds": {"train": 76_128, "validation": 10_875, "test": 21_750},
    "svhn_cropped": {"train": 73_257, "test": 26_032, "extra": 531_131},
    "patch_camelyon": {"train": 262_144, "validation": 32_768, "test": 32_768},
    "eurosat/rgb": {"train": 27_000},
    "resisc45": {"train": 31_500},
    "diabetic_retinopathy_detection/btgraham-300": {
        "train": 35_126, "validation": 10_906, "test": 42_670, "sample": 10},
    "clevr": {"train": 70_000, "validation": 15_000, "test": 15_000},
    "dmlab": {"train": 65_550, "validation": 22_628, "test": 22_735},
    "kitti": {"train": 6347, "validation": 423, "test": 711},
    "dsprites": {"train": 737_280},
    "smallnorb": {"train": 24_300, "test": 24_300},
}

# The benchmark's (train, val, test) sizes of each task, from task_adaptation's data tests.
BENCHMARK_SIZES = {
    "vtab/caltech101": (2754, 306, 6084),
    "vtab/cifar100": (45_000, 5000, 10_000),
    "vtab/dtd": (1880, 1880, 1880),
    "vtab/oxford_flowers102": (1020, 1020, 6149),
    "vtab/oxford_iiit_pet": (2944, 736, 3669),
    "vtab/sun397": (76_128, 10_875, 21_750),
    "vtab/svhn": (65_931, 7326, 26_032),
    "vtab/patch_camelyon": (262_144, 32_768, 32_768),
    "vtab/eurosat": (16_200, 5400, 5400),
    "vtab/resisc45": (18_900, 6300, 6300),
    "vtab/diabetic_retinopathy": (35_126, 10_906, 42_670),
    "vtab/clevr_count": (63_000, 7000, 15_000),
    "vtab/clevr_distance": (63_000, 7000, 15_000),
    "vtab/dmlab": (65_550, 22_628, 22_735),
    "vtab/kitti_distance": (6347, 423, 711),
    "vtab/dsprites_location": (589_824, 73_728, 73_728),
    "vtab/dsprites_orientation": (589_824, 73_728, 73_728),
    "vtab/smallnorb_azimuth": (24_300, 12_150, 12_150),
    "vtab/smallnorb_elevation": (24_300, 12_150, 12_150),
}


def _prepare(data_dir, task: vtab.Task, **splits) -> None:
  """Metadata of the task's TFDS data set: the given split sizes, else the real ones."""
  tfds_metadata.write_metadata(data_dir, task.tfds_name,
                               splits or TFDS_SPLITS[task.tfds_name.split(":")[0]])


@pytest.fixture
def mocked(tmp_path, monkeypatch):
  """Random examples of the real feature specs. Sequences of several features (CLEVR's and
  KITTI's objects) need one length for all of them, which mock_data draws per feature unless
  dynamic shapes are constant (10)."""
  monkeypatch.setattr(mocking, "EncodedRandomFakeGenerator", functools.partial(
      mocking.EncodedRandomFakeGenerator, constant_dynamic_shape=True))
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    yield functools.partial(_prepare, tmp_path)


def _serve(examples: list[dict]):
  """A mock_data `as_dataset_fn` that serves `examples` in this order, whatever the split: decoded
  values of the features a task reads (images as uint8 (h, w, c) arrays), of which each read
  gets the features it asks for."""
  def as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    del split, read_config, kwargs
    features = decoders.extract_features(builder.info.features)
    encoded = [features.encode_example({key: example[key] for key in features})
               for example in examples]
    signature = tf.nest.map_structure(lambda info: tf.TensorSpec(info.shape, info.tf_dtype),
                                      features.get_serialized_info())
    return tf.data.Dataset.from_generator(lambda: iter(encoded), output_signature=signature).map(
        functools.partial(features.decode_example, decoders=decoders.decoders))
  return as_dataset


@pytest.fixture
def served(tmp_path):
  """`served(examples, task, **split sizes)` mocks TFDS to serve hand-made examples."""
  def serve(examples, task, **splits):
    _prepare(tmp_path, task, **splits)
    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES,
                                  as_dataset_fn=_serve(examples), data_dir=str(tmp_path))
  return serve


def _cfg(dataset, **kwargs):
  """VTAB-1k tasks are fine-tuned: the finetune recipe, whose evaluation sees the whole image."""
  return data.InputConfig(**{"dataset": dataset, "data_dir": "/unused/by/mock", "crop": 24,
                             "recipe": "finetune", "precrop": 32, **kwargs})


def _image(rng, height=20, width=30, channels=3):
  return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


# The tasks and their splits.

def test_the_19_tasks_in_their_three_groups():
  assert vtab.GROUPS == {
      vtab.NATURAL: ("vtab/caltech101", "vtab/cifar100", "vtab/dtd", "vtab/oxford_flowers102",
                     "vtab/oxford_iiit_pet", "vtab/sun397", "vtab/svhn"),
      vtab.SPECIALIZED: ("vtab/patch_camelyon", "vtab/eurosat", "vtab/resisc45",
                         "vtab/diabetic_retinopathy"),
      vtab.STRUCTURED: ("vtab/clevr_count", "vtab/clevr_distance", "vtab/dmlab",
                        "vtab/kitti_distance", "vtab/dsprites_location",
                        "vtab/dsprites_orientation", "vtab/smallnorb_azimuth",
                        "vtab/smallnorb_elevation"),
  }
  assert set(vtab.TASKS) == set(BENCHMARK_SIZES)


@pytest.mark.parametrize("name", BENCHMARK_SIZES)
def test_benchmark_splits_have_the_benchmark_sizes(mocked, name):
  task = vtab.lookup(name)
  mocked(task)
  builder = tfds.builder(task.tfds_name)
  splits = builder.info.splits
  sizes = {split: info.num_examples for split, info in splits.items()}
  train, val, test = BENCHMARK_SIZES[name]
  expected = {"train800": 800, "val200": 200, "train800val200": 1000, "test": test,
              "train": train, "val": val, "trainval": train + val}
  assert {split: splits[task.split(split, sizes)].num_examples for split in vtab.SPLITS} == expected


def _ranges(split: str, splits) -> list[tuple[str, int, int]]:
  """(TFDS split, start, stop) of each part of `split`."""
  return [(i.splitname, i.from_ or 0, splits[i.splitname].num_examples if i.to is None else i.to)
          for i in tfds.core.ReadInstruction.from_spec(split).to_absolute(splits)]


@pytest.mark.parametrize("name", BENCHMARK_SIZES)
def test_train_val_and_test_examples_are_disjoint(mocked, name):
  task = vtab.lookup(name)
  mocked(task)
  splits = tfds.builder(task.tfds_name).info.splits
  sizes = {split: info.num_examples for split, info in splits.items()}
  parts = [_ranges(task.split(split, sizes), splits) for split in ("train", "val", "test")]
  for i, first in enumerate(parts):
    for second in parts[i + 1:]:
      for split_a, start_a, stop_a in first:
        for split_b, start_b, stop_b in second:
          assert split_a != split_b or stop_a <= start_b or stop_b <= start_a
  # The 1k splits are the first examples of train and val.
  assert _ranges(task.split("train800val200", sizes), splits) == [
      (parts[0][0][0], parts[0][0][1], parts[0][0][1] + 800),
      (parts[1][0][0], parts[1][0][1], parts[1][0][1] + 200)]


@pytest.mark.parametrize("name, expected", [
    ("vtab/caltech101", "train[:800]+train[2754:2954]"),
    ("vtab/dtd", "train[:800]+validation[:200]"),
    ("vtab/eurosat", "train[:800]+train[16200:16400]"),
    ("vtab/clevr_count", "train[:800]+train[63000:63200]"),
    ("vtab/smallnorb_elevation", "train[:800]+test[:200]"),
])
def test_train800val200_is_the_benchmark_split_string(name, expected):
  task = vtab.lookup(name)
  assert task.split("train800val200", TFDS_SPLITS[task.tfds_name.split(":")[0]]) == expected


@pytest.mark.parametrize("name, test", [
    ("vtab/clevr_count", "validation"),  # CLEVR's TFDS test split has no objects.
    ("vtab/eurosat", "train[21600:]"), ("vtab/dsprites_location", "train[663552:]"),
    ("vtab/smallnorb_azimuth", "test[12150:]"), ("vtab/kitti_distance", "test"),
])
def test_test_split_substitutes(name, test):
  task = vtab.lookup(name)
  assert task.split("test", TFDS_SPLITS[task.tfds_name.split(":")[0]]) == test


# Every task through the input pipeline, on random examples of the real feature specs.

@pytest.mark.parametrize("name", BENCHMARK_SIZES)
def test_every_task_reads_its_features_and_labels_in_range(mocked, name):
  task = vtab.lookup(name)
  mocked(task)
  cfg = _cfg(name, train_split="train800val200")
  info = data.dataset_info(cfg)
  assert info.num_train_examples == 1000
  assert info.num_classes == task.num_classes == dataset_table.lookup(name).num_classes
  assert len(info.class_names) == task.num_classes
  batch = next(data.eval_batches(cfg, global_batch_size=NUM_EXAMPLES, split="val200"))
  assert batch["image"].shape == (NUM_EXAMPLES, 24, 24, 3)
  assert batch["label"].shape == (NUM_EXAMPLES, task.num_classes)
  # A class outside [0, num_classes) would be an all-zero row.
  np.testing.assert_array_equal(batch["label"].sum(axis=1), np.ones(NUM_EXAMPLES))


@pytest.mark.parametrize("name, split, num_examples", [
    ("vtab/cifar100", "train800val200", 1000), ("vtab/eurosat", "test", 5400),
    ("vtab/kitti_distance", "val200", 200)])
def test_info_batches_and_hosts_use_the_benchmark_split(mocked, name, split, num_examples):
  task = vtab.lookup(name)
  mocked(task)
  cfg = _cfg(name, train_split=split)
  assert data.dataset_info(cfg).num_train_examples == num_examples
  batch = next(data.train_batches(cfg, global_batch_size=8, seed=0))
  assert batch["image"].shape == (8, 24, 24, 3)
  np.testing.assert_array_equal(batch["label"].sum(axis=1), np.ones(8))
  source = tfds_source.TfdsSource(cfg)
  shares = [source.train_examples(index, 3).num_examples for index in range(3)]
  assert sum(shares) == num_examples and max(shares) - min(shares) <= 2
  _, eval_total = source.eval_examples(split, 0, 2)
  assert eval_total == num_examples


# Labels computed from features, on hand-made values.

def _clevr_objects(depths):
  return {"objects": {"size": tf.zeros([len(depths)], tf.int64),
                      "pixel_coords": tf.constant([[50.0, 60.0, d] for d in depths],
                                                  tf.float32, shape=[len(depths), 3])}}


@pytest.mark.parametrize("num_objects, label", [(3, 0), (5, 2), (10, 7)])
def test_clevr_count_is_the_number_of_objects_minus_3(num_objects, label):
  assert int(vtab.lookup("vtab/clevr_count").label(_clevr_objects([9.0] * num_objects))) == label


@pytest.mark.parametrize("depths, label", [
    ([7.9], 0), ([8.0], 0), ([8.2], 1), ([8.5], 1), ([8.7], 2), ([9.2], 3), ([9.7], 4),
    ([10.0], 4), ([10.3], 5), ([60.0], 5), ([12.0, 8.7, 9.9], 2),
    # Depths the benchmark leaves undefined (no bin, or its empty class 6) take the nearest bin.
    ([-1.0], 0), ([150.0], 5)])
def test_clevr_distance_bins_the_depth_of_the_closest_object(depths, label):
  assert int(vtab.lookup("vtab/clevr_distance").label(_clevr_objects(depths))) == label


CAR, VAN, TRUCK, PEDESTRIAN, CYCLIST, TRAM = 0, 1, 2, 3, 5, 6


@pytest.mark.parametrize("objects, label", [
    ([(CAR, 5.0)], 0), ([(VAN, 8.0)], 0), ([(PEDESTRIAN, 3.0), (CAR, 15.0)], 1),
    ([(TRUCK, 20.0)], 1), ([(TRUCK, 25.0), (CAR, 40.0)], 2), ([(TRAM, 3.0), (CAR, 30.0)], 2),
    ([(PEDESTRIAN, 2.0), (CYCLIST, 4.0)], 3), ([], 3)])
def test_kitti_distance_bins_the_depth_of_the_closest_vehicle(objects, label):
  example = {"objects": {
      "type": tf.constant([kind for kind, _ in objects], tf.int64, shape=[len(objects)]),
      "location": tf.constant([[1.0, 1.5, depth] for _, depth in objects], tf.float32,
                              shape=[len(objects), 3])}}
  assert int(vtab.lookup("vtab/kitti_distance").label(example)) == label


@pytest.mark.parametrize("name, feature, value, label", [
    ("vtab/dsprites_location", "label_x_position", 0, 0),
    ("vtab/dsprites_location", "label_x_position", 1, 0),
    ("vtab/dsprites_location", "label_x_position", 2, 1),
    ("vtab/dsprites_location", "label_x_position", 29, 14),
    ("vtab/dsprites_location", "label_x_position", 31, 15),  # x = 1.0, the right edge.
    ("vtab/dsprites_orientation", "label_orientation", 2, 0),
    ("vtab/dsprites_orientation", "label_orientation", 3, 1),  # 3 / 2.5 = 1.2
    ("vtab/dsprites_orientation", "label_orientation", 5, 2),
    ("vtab/dsprites_orientation", "label_orientation", 37, 14),  # 14.8
    ("vtab/dsprites_orientation", "label_orientation", 38, 15),
    ("vtab/dsprites_orientation", "label_orientation", 39, 15),
    ("vtab/smallnorb_azimuth", "label_azimuth", 17, 17),
    ("vtab/smallnorb_elevation", "label_elevation", 4, 4),
    ("vtab/dmlab", "label", 5, 5),
])
def test_labels_read_from_one_class_feature(name, feature, value, label):
  task = vtab.lookup(name)
  assert dict(task.read_features) == {feature: True}
  assert int(task.label({feature: tf.constant(value, tf.int64)})) == label


def test_a_split_too_small_for_the_benchmark_is_refused():
  with pytest.raises(errors.DataError, match=r"'vtab/dtd' takes 200 examples from validation of "
                     r"the TFDS data set dtd:3\.\*\.\*, which has 150"):
    vtab.lookup("vtab/dtd").split("test", {"train": 1880, "validation": 150, "test": 1880})


def test_a_data_set_with_other_classes_than_the_benchmark_is_refused():
  with pytest.raises(errors.DataError, match=r"'vtab/svhn' has 10 classes.*labels 3"):
    vtab.lookup("vtab/svhn").class_names({"label": tfds.features.ClassLabel(num_classes=3)})
  with pytest.raises(errors.DataError, match=r"bins the 40 classes of 'label_orientation'.* 36"):
    vtab.lookup("vtab/dsprites_orientation").class_names(
        {"label_orientation": tfds.features.ClassLabel(num_classes=36)})


# Computed labels through the pipeline, on hand-made examples.

def _clevr_examples(rng, counts):
  return [{"image": _image(rng), "objects": {"size": np.zeros(n, np.int64)}} for n in counts]


def test_clevr_count_batches_carry_the_computed_labels(served):
  counts = [3, 4, 5, 6, 7, 8, 9, 10, 10, 9, 8, 7, 6, 5, 4, 3]
  task = vtab.lookup("vtab/clevr_count")
  with served(_clevr_examples(np.random.default_rng(0), counts), task,
              train=70_000, validation=16, test=15_000):
    batches = list(data.eval_batches(_cfg(task.name), global_batch_size=8))
  labels = np.concatenate([batch["label"] for batch in batches])
  np.testing.assert_array_equal(labels, np.eye(8)[np.array(counts) - 3])
  np.testing.assert_array_equal(np.concatenate([batch["mask"] for batch in batches]), np.ones(16))


def test_fewshot_draws_per_computed_class(served):
  counts = [3, 4, 5, 6, 7, 8, 9, 10] * 3
  task = vtab.lookup("vtab/clevr_count")
  cfg = _cfg(task.name, train_split="train800val200", examples_per_class=2)
  with served(_clevr_examples(np.random.default_rng(0), counts), task):
    assert data.dataset_info(cfg).num_train_examples == 16
    batch = next(data.train_batches(cfg, global_batch_size=16, seed=0))
  # One epoch of the 16 drawn examples: every object count twice.
  np.testing.assert_array_equal(batch["label"].sum(axis=0), np.full(8, 2.0))


def test_dsprites_images_are_scaled_from_0_1_to_0_255(served):
  image = np.zeros((64, 64, 1), np.uint8)
  image[:, :32] = 1
  task = vtab.lookup("vtab/dsprites_location")
  with served([{"image": image, "label_x_position": 31}] * 2, task):
    batch = next(data.eval_batches(_cfg(task.name, crop=64, precrop=64, eval_split="val200"),
                                   global_batch_size=2))
  np.testing.assert_array_equal(batch["image"][0, :, :32], np.ones((64, 32, 3)))
  np.testing.assert_array_equal(batch["image"][0, :, 32:], -np.ones((64, 32, 3)))
  np.testing.assert_array_equal(batch["label"][0], np.eye(16)[15])


# Errors and configs.

def test_unknown_task_names_the_value_and_the_tasks():
  with pytest.raises(errors.ConfigError, match=r"'vtab/clevr_cnt' is not a VTAB-1k task\. "
                     r"Did you mean 'vtab/clevr_count'") as error:
    data.dataset_info(_cfg("vtab/clevr_cnt"))
  assert all(name in str(error.value) for name in vtab.TASKS)


def test_unknown_split_names_the_value_and_the_splits(mocked):
  mocked(vtab.lookup("vtab/cifar100"))
  with pytest.raises(errors.ConfigError, match=r"'vtab/cifar100' has no split 'train\[:1000\]'; "
                     r"use one of train800, val200, train800val200, test"):
    data.dataset_info(_cfg("vtab/cifar100", train_split="train[:1000]"))


def test_unprepared_task_names_the_tfds_data_set_to_build(tmp_path):
  with pytest.raises(errors.DataError, match=r"'vtab/clevr_distance' reads the TFDS data set "
                     r"clevr:3\.\*\.\*\. .* is not prepared") as error:
    data.dataset_info(data.InputConfig(dataset="vtab/clevr_distance", data_dir=str(tmp_path)))
  assert f"tfds build clevr:3.1.0 --data_dir={tmp_path}" in str(error.value)
  assert list(tmp_path.iterdir()) == []


def _hyperrule_config(arg):
  return cli.recipe_config(f"configs/hyperrule.py:{arg}")


def test_hyperrule_config_of_a_task_trains_on_train800val200_and_tests_on_test():
  config = _hyperrule_config("dataset=vtab/clevr_count")
  assert config.dataset == "vtab/clevr_count"
  assert (config.data.train_split, config.data.eval_split) == ("train800val200", "test")
  assert config.total_steps == 500 and config.data.mixup_alpha == 0.0  # 1000 examples.
  assert (config.data.precrop, config.data.crop) == (448, 384)  # 320 x 480 images.
  fewshot = _hyperrule_config("dataset=vtab/clevr_count,examples_per_class=2")
  assert fewshot.data.examples_per_class == 2


def test_table_entries_of_tasks_are_the_tasks():
  for name, task in vtab.TASKS.items():
    facts = dataset_table.lookup(name)
    assert (facts.tfds_name, facts.train_examples, facts.num_classes) == (name, 1000,
                                                                          task.num_classes)
    assert (facts.train_split, facts.eval_split) == ("train800val200", "test")
