"""VTAB-1k: the 19 tasks of the Visual Task Adaptation Benchmark, as google-research/task_adaptation
defines them.

A task is a TFDS data set (name, config and version as the benchmark pins them), a label computed
from some of its features, and the benchmark's splits carved out of the TFDS splits. Fine-tune on
`train800val200` (1000 examples) and report accuracy on `test`; tune hyper-parameters by training
on `train800` and evaluating on `val200`. The benchmark's full `train`, `val` and `trainval` splits
are also defined; the 1k splits are their first 800 (train) and 200 (val) examples.

Every task reads its image from the TFDS feature `image` (smallNORB: the first camera; dSprites and
smallNORB images are grey and are decoded to RGB like any other). See docs/data.md for the table.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from big_transfer import errors

PREFIX = "vtab/"
NATURAL, SPECIALIZED, STRUCTURED = "natural", "specialized", "structured"
TRAIN800, VAL200, TRAIN800VAL200, TEST = "train800", "val200", "train800val200", "test"
TRAIN, VAL, TRAINVAL = "train", "val", "trainval"
SPLITS = (TRAIN800, VAL200, TRAIN800VAL200, TEST, TRAIN, VAL, TRAINVAL)
TRAIN_EXAMPLES, VAL_EXAMPLES = 800, 200
# What VTAB-1k fine-tunes on.
NUM_TRAIN_EXAMPLES = TRAIN_EXAMPLES + VAL_EXAMPLES


@dataclasses.dataclass(frozen=True)
class _Slice:
  """Examples [start, stop) of a TFDS split; stop None is its end."""
  split: str
  start: int = 0
  stop: int | None = None

  def first(self, n: int) -> "_Slice":
    return _Slice(self.split, self.start, self.start + n)

  def __str__(self) -> str:
    if self.start == 0 and self.stop is None:
      return self.split
    return f"{self.split}[{self.start or ''}:{'' if self.stop is None else self.stop}]"


# The benchmark's (train, val, test) of a task from the sizes of the TFDS splits.
Layout = Callable[[Mapping[str, int]], tuple[_Slice, _Slice, _Slice]]


def _tfds_splits(sizes: Mapping[str, int]) -> tuple[_Slice, _Slice, _Slice]:
  """The data set's own train, validation and test splits."""
  del sizes
  return _Slice("train"), _Slice("validation"), _Slice("test")


def _val_from_train(train_percent: int, test: str = "test") -> Layout:
  """The last (100 - train_percent)% of the TFDS train split is the validation split."""
  def layout(sizes):
    num_train = train_percent * sizes["train"] // 100
    return _Slice("train", 0, num_train), _Slice("train", num_train), _Slice(test)
  return layout


def _all_from_train(train_percent: int, val_percent: int) -> Layout:
  """The TFDS train split is all there is: train, then validation, then the rest is test."""
  def layout(sizes):
    num_train = train_percent * sizes["train"] // 100
    num_trainval = num_train + val_percent * sizes["train"] // 100
    return (_Slice("train", 0, num_train), _Slice("train", num_train, num_trainval),
            _Slice("train", num_trainval))
  return layout


def _val_from_test(val_percent: int) -> Layout:
  """The first val_percent% of the TFDS test split is the validation split, the rest is test."""
  def layout(sizes):
    num_val = val_percent * sizes["test"] // 100
    return _Slice("train"), _Slice("test", 0, num_val), _Slice("test", num_val)
  return layout


# Labels: functions of the parsed features (a dict as `tfds.decode.PartialDecoding` yields it)
# to an int64 () class, and the names of the classes, from the data set's FeaturesDict.

def _class_label(feature: str) -> Callable[[Mapping[str, Any]], tf.Tensor]:
  return lambda example: tf.cast(example[feature], tf.int64)


def _names_of(feature: str) -> Callable[[tfds.features.FeaturesDict], Sequence[str]]:
  return lambda features: features[feature].names


def _merged_class_label(feature: str, num_original: int, num_classes: int):
  """Class c of `num_original` goes to floor(c / (num_original / num_classes)).

  Returns:
    (label function, class names function).
  """
  width = num_original / num_classes

  def label(example):
    return tf.cast(tf.math.floordiv(tf.cast(example[feature], tf.float32), width), tf.int64)

  def names(features):
    if features[feature].num_classes != num_original:
      raise errors.DataError(f"The VTAB-1k benchmark bins the {num_original} classes of "
                             f"{feature!r}, but the prepared data set has "
                             f"{features[feature].num_classes}; prepare the version named here.")
    members = [[c for c in range(num_original) if math.floor(c / width) == k]
               for k in range(num_classes)]
    return [f"{feature} {m[0]}-{m[-1]}" for m in members]

  return label, names


def _bin(value: tf.Tensor, lower_edges: Sequence[float]) -> tf.Tensor:
  """int64 () index of the last of the increasing `lower_edges` below `value`, 0 if none is."""
  below = tf.reduce_sum(tf.cast(tf.constant(lower_edges, value.dtype) < value, tf.int64))
  return tf.maximum(below - 1, 0)


def _bin_names(lower_edges: Sequence[float], unit: str) -> tuple[str, ...]:
  upper = [f"{low:g} < {unit} <= {high:g}" for low, high in zip(lower_edges, lower_edges[1:])]
  return (*upper, f"{unit} > {lower_edges[-1]:g}")


_CLEVR_MIN_OBJECTS, _CLEVR_MAX_OBJECTS = 3, 10
# The benchmark's thresholds on the depth of the closest object (its pixel_coords z); it also has
# an edge at 100 whose class 6 no image reaches, so depths above 10 are class 5.
_CLEVR_DEPTH_EDGES = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0)
# KITTI: object types below 3 (Car, Van, Truck) are vehicles; an image without one counts as a
# vehicle at 1000 m, i.e. the last class, which only it reaches.
_KITTI_VEHICLE_TYPES = 3
_KITTI_NO_VEHICLE_DEPTH = 1000.0
_KITTI_DEPTH_EDGES = (-100.0, 8.0, 20.0, 999.0)


def _clevr_count(example) -> tf.Tensor:
  return tf.size(example["objects"]["size"], out_type=tf.int64) - _CLEVR_MIN_OBJECTS


def _clevr_closest_depth(example) -> tf.Tensor:
  return _bin(tf.reduce_min(example["objects"]["pixel_coords"][:, 2]), _CLEVR_DEPTH_EDGES)


def _kitti_closest_vehicle_depth(example) -> tf.Tensor:
  objects = example["objects"]
  depths = tf.boolean_mask(objects["location"][:, 2], objects["type"] < _KITTI_VEHICLE_TYPES)
  closest = tf.reduce_min(tf.concat([depths, [_KITTI_NO_VEHICLE_DEPTH]], axis=0))
  return _bin(closest, _KITTI_DEPTH_EDGES)


@tfds.decode.make_decoder()
def _scaled_binary_png(serialized_image, feature):
  """Re-encodes a 0/1 image with pixels 0/255, still as PNG: the pipeline decodes it later."""
  return tf.io.encode_png(feature.decode_example(serialized_image) * np.uint8(255))


@dataclasses.dataclass(frozen=True)
class Task:
  """One VTAB-1k task.

  Attributes:
    name: "vtab/NAME".
    group: NATURAL, SPECIALIZED or STRUCTURED.
    tfds_name: the TFDS data set it reads, `name[/config]:version`.
    num_classes: number of classes.
    read_features: the features `label` reads, as a `tfds.decode.PartialDecoding` spec.
    label: int64 () class of an example from its parsed `read_features`.
    names: the class names, from the data set's `tfds.features.FeaturesDict`.
    layout: the benchmark's (train, val, test) as slices of the TFDS splits, from their sizes.
    binary_image: the TFDS images hold pixels 0 and 1, which the benchmark scales by 255.
  """
  name: str
  group: str
  tfds_name: str
  num_classes: int
  read_features: Mapping[str, Any]
  label: Callable[[Mapping[str, Any]], tf.Tensor]
  names: Callable[[tfds.features.FeaturesDict], Sequence[str]]
  layout: Layout
  binary_image: bool = False

  def class_names(self, features: tfds.features.FeaturesDict) -> tuple[str, ...]:
    """The names of the classes; a DataError if the data set's labels are not the benchmark's."""
    names = tuple(self.names(features))
    if len(names) != self.num_classes:
      raise errors.DataError(
          f"VTAB task {self.name!r} has {self.num_classes} classes, but the prepared TFDS data "
          f"set {self.tfds_name} labels {len(names)}; prepare the version named here.")
    return names

  def splits(self, sizes: Mapping[str, int]) -> dict[str, str]:
    """{benchmark split name: TFDS split string} given the number of examples of each TFDS split
    (TFDS slicing syntax, e.g. "train[:800]+train[2754:2954]" for train800val200)."""
    train, val, test = self.layout(sizes)
    for part, needed in ((train, TRAIN_EXAMPLES), (val, VAL_EXAMPLES)):
      available = (sizes[part.split] if part.stop is None else part.stop) - part.start
      if available < needed:
        raise errors.DataError(
            f"VTAB task {self.name!r} takes {needed} examples from {part} of the TFDS data set "
            f"{self.tfds_name}, which has {available}; prepare the full data set.")
    train800, val200 = train.first(TRAIN_EXAMPLES), val.first(VAL_EXAMPLES)
    return {TRAIN800: str(train800), VAL200: str(val200), TRAIN800VAL200: f"{train800}+{val200}",
            TEST: str(test), TRAIN: str(train), VAL: str(val), TRAINVAL: f"{train}+{val}"}

  def image_decoder(self) -> tfds.decode.Decoder:
    """How to read the `image` feature: still encoded, with pixels scaled to 0/255 if binary."""
    return _scaled_binary_png() if self.binary_image else tfds.decode.SkipDecoding()

  def split(self, name: str, sizes: Mapping[str, int]) -> str:
    """The TFDS split string of the benchmark split `name` (one of SPLITS)."""
    if name not in SPLITS:
      raise errors.ConfigError(
          f"VTAB task {self.name!r} has no split {name!r}; use one of {', '.join(SPLITS)} "
          f"(fine-tune on {TRAIN800VAL200!r}, report {TEST!r}; tune on {TRAIN800!r} and "
          f"{VAL200!r}). TFDS slicing of these names is not supported.")
    return self.splits(sizes)[name]


def _labelled(name, group, tfds_name, num_classes, layout, feature="label") -> Task:
  """A task whose class is the TFDS ClassLabel `feature`."""
  return Task(PREFIX + name, group, tfds_name, num_classes, {feature: True}, _class_label(feature),
              _names_of(feature), layout)


def _dsprites(name, feature, num_original) -> Task:
  label, names = _merged_class_label(feature, num_original, 16)
  return Task(PREFIX + name, STRUCTURED, "dsprites:2.*.*", 16, {feature: True}, label, names,
              _all_from_train(80, 10), binary_image=True)


_CLEVR = "clevr:3.*.*"
_TASKS = (
    _labelled("caltech101", NATURAL, "caltech101:3.*.*", 102, _val_from_train(90)),
    _labelled("cifar100", NATURAL, "cifar100:3.*.*", 100, _val_from_train(90)),
    _labelled("dtd", NATURAL, "dtd:3.*.*", 47, _tfds_splits),
    _labelled("oxford_flowers102", NATURAL, "oxford_flowers102:2.*.*", 102, _tfds_splits),
    # The benchmark read 3.x; TFDS 4.9 builds only 4.0.0 (head boxes added, corrupt images fixed).
    _labelled("oxford_iiit_pet", NATURAL, "oxford_iiit_pet:4.*.*", 37, _val_from_train(80)),
    _labelled("sun397", NATURAL, "sun397/tfds:4.*.*", 397, _tfds_splits),
    _labelled("svhn", NATURAL, "svhn_cropped:3.*.*", 10, _val_from_train(90)),
    _labelled("patch_camelyon", SPECIALIZED, "patch_camelyon:2.*.*", 2, _tfds_splits),
    _labelled("eurosat", SPECIALIZED, "eurosat/rgb:2.*.*", 10, _all_from_train(60, 20)),
    _labelled("resisc45", SPECIALIZED, "resisc45:3.*.*", 45, _all_from_train(60, 20)),
    _labelled("diabetic_retinopathy", SPECIALIZED,
              "diabetic_retinopathy_detection/btgraham-300:3.*.*", 5, _tfds_splits),
    # CLEVR's TFDS test split has no objects: the benchmark tests on the validation split.
    Task(PREFIX + "clevr_count", STRUCTURED, _CLEVR,
         _CLEVR_MAX_OBJECTS - _CLEVR_MIN_OBJECTS + 1, {"objects": {"size": True}}, _clevr_count,
         lambda features: [f"{n} objects"
                           for n in range(_CLEVR_MIN_OBJECTS, _CLEVR_MAX_OBJECTS + 1)],
         _val_from_train(90, test="validation")),
    Task(PREFIX + "clevr_distance", STRUCTURED, _CLEVR, len(_CLEVR_DEPTH_EDGES),
         {"objects": {"pixel_coords": True}}, _clevr_closest_depth,
         lambda features: _bin_names(_CLEVR_DEPTH_EDGES, "closest depth"),
         _val_from_train(90, test="validation")),
    _labelled("dmlab", STRUCTURED, "dmlab:2.0.1", 6, _tfds_splits),
    Task(PREFIX + "kitti_distance", STRUCTURED, "kitti:3.1.0", len(_KITTI_DEPTH_EDGES),
         {"objects": {"type": True, "location": True}}, _kitti_closest_vehicle_depth,
         lambda features: (*_bin_names(_KITTI_DEPTH_EDGES, "closest vehicle depth (m)")[:-1],
                           "no vehicle"),
         _tfds_splits),
    _dsprites("dsprites_location", "label_x_position", 32),
    _dsprites("dsprites_orientation", "label_orientation", 40),
    _labelled("smallnorb_azimuth", STRUCTURED, "smallnorb:2.*.*", 18, _val_from_test(50),
              feature="label_azimuth"),
    _labelled("smallnorb_elevation", STRUCTURED, "smallnorb:2.*.*", 9, _val_from_test(50),
              feature="label_elevation"),
)
TASKS: dict[str, Task] = {task.name: task for task in _TASKS}
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(task.name for task in _TASKS if task.group == group)
    for group in (NATURAL, SPECIALIZED, STRUCTURED)}


def is_task(dataset: str) -> bool:
  """Whether `dataset` names a VTAB-1k task (starts with "vtab/")."""
  return dataset.startswith(PREFIX)


def lookup(name: str) -> Task:
  """The task "vtab/NAME", or a ConfigError that lists the tasks."""
  if name in TASKS:
    return TASKS[name]
  hint = errors.did_you_mean(name, TASKS)
  raise errors.ConfigError(f"{name!r} is not a VTAB-1k task.{hint} The 19 tasks: "
                           f"{', '.join(TASKS)}.")

