"""Data sets from TFDS: opening them (with advice when that fails), their facts, host shares.

The pipeline never downloads: a data set must already be prepared in data_dir, except the
built-in `bit_synthetic`, which is generated there on first use. For training, hosts read
disjoint, even sub-splits (`tfds.even_splits`) of the configured split, each epoch with its files
in a new order (`streams`), or, for array_record files, its examples in a new permutation
(`random_access`); a few-shot draw is held in memory, whole, by every host.
A `vtab/NAME` data set is a VTAB-1k task (vtab.py): its TFDS data set, labelled and split as the
benchmark does.
"""

import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from big_transfer import errors
from big_transfer.data import config as config_lib
from big_transfer.data import (dataset_table, preprocess, random_access, sampling, streams,
                               synthetic, vtab)

IMAGE, LABEL, LABELS = "image", "label", "labels"
# Images whose headers are read to measure a typical size when neither the features nor the
# table of standard data sets know it.
_MEASURED_IMAGES = 64


def build_command(dataset: str, data_dir: str | None) -> str:
  """The shell command that prepares a TFDS data set in `data_dir` (None: TFDS's default)."""
  return f"tfds build {dataset} --data_dir={data_dir or tfds.core.constants.DATA_DIR}"


def is_prepared(dataset: str, data_dir: str | None) -> bool:
  """Whether `dataset` (a TFDS name) is prepared in `data_dir`; reads the metadata only."""
  try:
    return tfds.builder(dataset, data_dir=data_dir).is_prepared()
  except tfds.core.DatasetNotFoundError:
    return False


def _prepare_hint(dataset: str, data_dir: str) -> str:
  return ("The input pipeline never downloads; prepare a TFDS data set once with "
          f"`{build_command(dataset, data_dir)}` (imagenet2012 cannot be downloaded "
          "automatically: put its archives ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
          "in a folder and add `--manual_dir=THAT_FOLDER`).")


def open_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Returns the builder of a prepared TFDS data set; prepares `bit_synthetic` if needed."""
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    name = dataset.split(":")[0].split("/")[0]
    hint = errors.did_you_mean(name, tfds.list_builders(with_community_datasets=False))
    directory = data_dir or tfds.core.constants.DATA_DIR
    raise errors.DataError(f"TFDS has no data set {name!r} (dataset={dataset!r}): neither its "
                           f"code nor prepared data in data_dir {directory}.{hint} "
                           f"{_prepare_hint(dataset, directory)} For images on disk use "
                           "dataset='folder:/path/to/images'.") from None
  if not builder.is_prepared():
    if builder.name != synthetic.BitSynthetic.name:
      # A version pattern ("3.*.*") is named exactly in the advice: a shell would expand it.
      exact = f"{builder.info.full_name.rsplit('/', 1)[0]}:{builder.version}"
      raise errors.DataError(f"Data set {dataset!r} is not prepared in data_dir "
                             f"{builder.data_dir_root} (there is no {builder.data_path}). "
                             + _prepare_hint(exact if ":" in dataset else dataset,
                                             builder.data_dir_root))
    # TFDS prints its own lines of this on stdout only; a pause of seconds gets a reason.
    logging.info("Generating the built-in data set %s in %s, once.", dataset, builder.data_path)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def _table_facts(dataset: str,
                 builder: tfds.core.DatasetBuilder) -> dataset_table.DatasetFacts | None:
  """The table entry of `dataset`, or of a standard transfer set read through this builder."""
  config = builder.builder_config
  full_name = f"{builder.name}/{config.name}" if config else builder.name
  return dataset_table.find(dataset, (builder.name, full_name))


class TfdsSource:
  """A TFDS data set read as an `InputConfig` says.

  Attributes:
    num_classes: width of the target vectors.
    class_names: name of each label.
  """

  def __init__(self, cfg: config_lib.InputConfig, label_key: str | None = None):
    """`label_key` reads the targets from that feature (a class label, or a sequence of them for
    multi-hot targets, such as imagenet2012_real's `real_label`) instead of the default one."""
    self._cfg = cfg
    # A VTAB-1k task names a TFDS data set, how to label it and how to split it (vtab.py).
    self._task = vtab.lookup(cfg.dataset) if vtab.is_task(cfg.dataset) else None
    self._builder = self._open_task() if self._task else open_builder(cfg.dataset, cfg.data_dir)
    self._train_split = self._split(cfg.train_split)
    features = self._builder.info.features
    if self._task:
      self._multi_hot = False
      self.num_classes = self._task.num_classes
      self.class_names = self._task.class_names(features)
      return
    if label_key:
      self._label_key = label_key
      self._multi_hot = label_key in features and isinstance(features[label_key],
                                                             tfds.features.Sequence)
    else:
      self._multi_hot = cfg.multilabel and LABELS in features
      self._label_key = LABELS if self._multi_hot else LABEL
    if IMAGE not in features or self._label_key not in features:
      raise errors.DataError(f"Data set {cfg.dataset!r} has features {sorted(features)}; the "
                             f"pipeline reads an {IMAGE!r} and a {self._label_key!r} feature.")
    label_feature = features[self._label_key]
    label_feature = label_feature.feature if self._multi_hot else label_feature
    self.num_classes = label_feature.num_classes
    self.class_names = tuple(label_feature.names)
    if self.num_classes < config_lib.MIN_CLASSES:
      raise errors.DataError(f"Data set {cfg.dataset!r} has {self.num_classes} class"
                             f"{'' if self.num_classes == 1 else 'es'} {list(self.class_names)} "
                             f"in its {self._label_key!r} feature: a classifier needs at least "
                             f"{config_lib.MIN_CLASSES}. Prepare it with every class.")

  def _open_task(self) -> tfds.core.DatasetBuilder:
    try:
      return open_builder(self._task.tfds_name, self._cfg.data_dir)
    except errors.DataError as error:
      raise errors.DataError(f"VTAB-1k task {self._task.name!r} reads the TFDS data set "
                             f"{self._task.tfds_name}. {error}") from None

  def _split(self, name: str) -> str:
    """The TFDS split string of a configured split; a VTAB-1k task maps its own split names."""
    if not self._task:
      return name
    sizes = {split: info.num_examples for split, info in self._builder.info.splits.items()}
    return self._task.split(name, sizes)

  def _label_features(self) -> dict:
    """The features the labels are read from, as a `tfds.decode.PartialDecoding` spec."""
    return dict(self._task.read_features) if self._task else {self._label_key: True}

  def _label(self, example) -> tf.Tensor:
    """int64 () class of a single-label example read with `_label_features`."""
    return self._task.label(example) if self._task else example[LABEL]

  def info(self) -> config_lib.DatasetInfo:
    """Training set size (after slicing and few-shot), typical image size, classes."""
    k = self._cfg.examples_per_class
    num_train = (k * self.num_classes if k
                 else self._builder.info.splits[self._train_split].num_examples)
    return config_lib.DatasetInfo(num_train, self._image_size(), self.num_classes,
                                  self.class_names)

  def split_size(self, split: str) -> int:
    """Examples of `split` (TFDS slicing allowed), from the metadata."""
    splits = self._builder.info.splits
    try:
      return splits[self._split(split)].num_examples
    except (KeyError, ValueError) as e:  # TFDS raises either for an unknown or malformed split.
      raise errors.DataError(f"Data set {self._cfg.dataset!r} has no split {split!r} ({e}); its "
                             f"splits: {sorted(splits)}.") from None

  def _image_size(self) -> tuple[int, int]:
    height, width = self._builder.info.features[IMAGE].shape[:2]
    if height and width:
      return height, width
    facts = _table_facts(self._cfg.dataset, self._builder)
    if facts:
      return facts.image_size
    shapes = self._raw(self._train_split, {IMAGE: True}).take(_MEASURED_IMAGES).map(
        lambda example: preprocess.image_shape(example[IMAGE])[:2])
    return preprocess.typical_size(np.stack(list(shapes.as_numpy_iterator())))

  def _raw(self, split, features=None, file_seed: tf.Tensor | None = None) -> tf.data.Dataset:
    """{feature: value} of `split` for the image (still encoded) and the labels, or for
    `features` only (a `tfds.decode.PartialDecoding` spec); other features are not even parsed.
    Files are read in file order, or in an order drawn with the int64 scalar tensor
    `file_seed`; files read by random access (array_record) give their examples in key order,
    or in a permutation drawn with `file_seed`."""
    features = features or {IMAGE: True, **self._label_features()}
    image = self._task.image_decoder() if self._task else tfds.decode.SkipDecoding()
    decoders = tfds.decode.PartialDecoding(features,
                                           decoders={IMAGE: image} if IMAGE in features else None)
    if random_access.reads_by_random_access(self._builder):  # array_record files.
      return random_access.read(self._builder, split, decoders, order_seed=file_seed)
    # A tensor seed, drawn per epoch by `streams`, keeps the file order a function of the epoch;
    # TFDS's own reshuffling per iteration would depend on how many epochs this process has run.
    read_config = tfds.ReadConfig(try_autocache=False, shuffle_seed=file_seed,
                                  shuffle_reshuffle_each_iteration=False)
    return self._builder.as_dataset(split=split, shuffle_files=file_seed is not None,
                                    decoders=decoders, read_config=read_config)

  def _read(self, split, file_seed: tf.Tensor | None = None) -> tf.data.Dataset:
    """{"image": encoded bytes, "label": float32 (num_classes,) target} of `split`; files in the
    order `_raw` reads them with `file_seed`."""
    def target(example):
      if self._multi_hot:  # Sum, not max: an example without labels gets zeros, not -inf.
        return tf.minimum(tf.reduce_sum(tf.one_hot(example[self._label_key], self.num_classes),
                                        0), 1.0)
      return tf.one_hot(self._label(example), self.num_classes)

    return self._raw(split, file_seed=file_seed).map(
        lambda example: {"image": example[IMAGE], "label": target(example)},
        num_parallel_calls=tf.data.AUTOTUNE)

  def _host_shard(self, split: str, process_index: int, process_count: int) -> streams.TfdsShard:
    """This host's even share of the TFDS split string `split`."""
    host_split = tfds.even_splits(split, n=process_count)[process_index]
    return streams.TfdsShard(functools.partial(self._read, host_split),
                             self._builder.info.splits[host_split].num_examples)

  def train_examples(self, process_index: int,
                     process_count: int) -> streams.TfdsShard | streams.HeldExamples:
    """This host's share of the training examples; a few-shot draw is held whole by every host
    (each reads its positions of one global stream, `streams`)."""
    if self._cfg.examples_per_class:
      return self._fewshot_examples()
    return self._host_shard(self._train_split, process_index, process_count)

  def eval_examples(self, split: str, process_index: int,
                    process_count: int) -> tuple[streams.TfdsShard, int]:
    """This host's share of `split`, and the number of examples of the whole split."""
    split = self._split(split)
    return (self._host_shard(split, process_index, process_count),
            self._builder.info.splits[split].num_examples)

  def _fewshot_examples(self) -> streams.HeldExamples:
    """Draws K per class over the whole split and holds the drawn examples.

    Reads the split twice: once for the labels, once for the drawn images.
    """
    cfg = self._cfg
    if self._multi_hot:
      raise errors.DataError(f"examples_per_class draws per class of the single {LABEL!r} feature, "
                             f"but multilabel=True reads {LABELS!r}; turn one of them off.")
    labels = np.concatenate(list(
        self._raw(self._train_split, self._label_features()).map(self._label).batch(4096)
        .as_numpy_iterator()))
    drawn = sampling.select_per_class(labels, cfg.examples_per_class, cfg.fewshot_seed,
                                      self.class_names)
    is_drawn = np.zeros(len(labels), bool)
    is_drawn[drawn] = True
    is_drawn = tf.constant(is_drawn)
    images = (self._raw(self._train_split).enumerate()
              .filter(lambda index, example: tf.gather(is_drawn, index))
              .map(lambda index, example: example[IMAGE]))
    return streams.HeldExamples(np.array(list(images.as_numpy_iterator()), dtype=object),
                                labels[drawn], are_paths=False)
