"""One host's examples, and the order it reads them in: the resumable training stream.

A host's examples come in one of two forms. `ArrayRecords` are held in memory (the files of a
folder, a few-shot draw): each epoch is a full permutation. `StreamRecords` are read from TFDS in
file order: each epoch passes them through a shuffle buffer. Either way the order of epoch e is
keyed by (seed, process index, e) only, so a stream can start at any epoch without replaying the
ones before it, and then skip to a position inside it before any image is decoded.
"""

from collections.abc import Callable
import dataclasses

import numpy as np
import tensorflow as tf

from big_transfer import errors
from big_transfer.data import preprocess

# Purposes of the stateless keys, so that no two random choices share a key.
SHUFFLE, AUGMENT, MIXUP = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class ArrayRecords:
  """One host's examples held in memory.

  Attributes:
    images: object (n,) encoded image bytes, or file paths when `are_paths`.
    labels: int64 (n,) class of each example.
    are_paths: whether `images` holds paths of files to read.
  """
  images: np.ndarray
  labels: np.ndarray
  are_paths: bool

  @property
  def num_examples(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class StreamRecords:
  """One host's examples read from TFDS in a fixed order.

  Attributes:
    dataset: yields {"image": encoded bytes, "label": float32 (num_classes,) target}.
    num_examples: how many examples `dataset` yields.
  """
  dataset: tf.data.Dataset
  num_examples: int


def _lookup(records: ArrayRecords, num_classes: int):
  """Maps an index into `records` to {"image": encoded bytes, "label": float32 one-hot}."""
  images = tf.constant(records.images, tf.string)
  labels = tf.constant(records.labels, tf.int64)

  def example(index):
    image = tf.gather(images, index)
    if records.are_paths:
      image = tf.io.read_file(image)
    return {"image": image, "label": tf.one_hot(tf.gather(labels, index), num_classes)}

  return example


def train_examples(records: ArrayRecords | StreamRecords, num_classes: int, seed: int,
                   process_index: int, start: int, shuffle_buffer: int,
                   transform: Callable[[tf.Tensor, dict], dict]) -> tf.data.Dataset:
  """The endless stream of one host's training examples from host position `start` on.

  Position t belongs to epoch t // n at place t % n (n = records.num_examples). Each example is
  loaded and transformed in one parallel map, after the skip to `start`.

  Args:
    transform: (position int64, {"image": encoded bytes, "label": float32 (num_classes,)}) ->
      the example to yield.

  Returns:
    A dataset of `transform`'s outputs.
  """
  n = records.num_examples
  if n == 0:
    raise errors.DataError(f"Host {process_index} has no training examples; use fewer hosts or "
                           "more data (its share of the train split is empty).")
  first_epoch, offset = divmod(start, n)
  epochs = tf.data.Dataset.counter(first_epoch)
  epoch_key = lambda epoch: preprocess.key(seed, SHUFFLE, process_index, epoch)
  if isinstance(records, ArrayRecords):
    order = epochs.flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(
        tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), epoch_key(epoch))))
    lookup = _lookup(records, num_classes)
    return order.skip(offset).enumerate(start).map(
        lambda position, index: transform(position, lookup(index)),
        num_parallel_calls=tf.data.AUTOTUNE)
  buffer = min(shuffle_buffer, n)
  shuffle_seed = lambda epoch: tf.random.stateless_uniform(
      [], epoch_key(epoch), minval=None, maxval=None, dtype=tf.int64)
  examples = epochs.flat_map(
      lambda epoch: records.dataset.shuffle(buffer, seed=shuffle_seed(epoch))).skip(offset)
  return examples.enumerate(start).map(transform, num_parallel_calls=tf.data.AUTOTUNE)


def eval_examples(records: ArrayRecords | StreamRecords, num_classes: int,
                  transform: Callable[[dict], dict]) -> tf.data.Dataset:
  """One pass over a host's examples in their fixed order, each loaded and transformed in one
  parallel map; `transform` takes {"image": encoded bytes, "label": float32 (num_classes,)}."""
  if isinstance(records, ArrayRecords):
    lookup = _lookup(records, num_classes)
    return tf.data.Dataset.range(records.num_examples).map(
        lambda index: transform(lookup(index)), num_parallel_calls=tf.data.AUTOTUNE)
  return records.dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
