"""The order in which a host reads examples: the endless, resumable training stream and one
evaluation pass.

Examples come in one of two forms. `HeldExamples` are held in memory (the images of a folder, a
few-shot draw) and shared by all hosts: epoch after epoch of permutations of all of them form one
global stream, and host i of N reads its positions i, i + N, i + 2N, ... of it, so every host
reads as many examples as the others and every example is read once per epoch, whatever N. A
`TfdsShard` is one host's sub-split of a TFDS split: each epoch reads its files in a new order,
through a shuffle buffer. Either way the order of epoch e is keyed by (seed, e) (and the host, for
TFDS) only, so a stream can start at any epoch without replaying the ones before it, and then skip
to a position inside it before any image is decoded.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from big_transfer import errors
from big_transfer.data import preprocess

# Purposes of the stateless keys, so that no two random choices share a key.
SHUFFLE, AUGMENT, MIXUP = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class HeldExamples:
  """Examples held in memory, shared by all hosts.

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
class TfdsShard:
  """One host's share of a TFDS split, read file by file.

  Attributes:
    read: file_seed -> a dataset of {"image": encoded bytes, "label": float32 (num_classes,)
      target}: all examples of the share, its files in an order drawn with file_seed (an int64
      scalar tensor), or in file order for None.
    num_examples: how many examples `read` yields.
  """
  read: Callable[[tf.Tensor | None], tf.data.Dataset]
  num_examples: int


def _lookup(examples: HeldExamples, num_classes: int):
  """Maps an index into `examples` to {"image": encoded bytes, "label": float32 one-hot}."""
  images = tf.constant(examples.images, tf.string)
  labels = tf.constant(examples.labels, tf.int64)

  def example(index):
    image = tf.gather(images, index)
    if examples.are_paths:
      image = tf.io.read_file(image)
    return {"image": image, "label": tf.one_hot(tf.gather(labels, index), num_classes)}

  return example


def train_stream(examples: HeldExamples | TfdsShard, num_classes: int, seed: int,
                 process_index: int, process_count: int, start: int, shuffle_buffer: int,
                 transform: Callable[[tf.Tensor, dict], dict]) -> tf.data.Dataset:
  """The endless stream of this host's training examples from host position `start` on.

  Held examples: host position t is position t * process_count + process_index of the global
  stream, which holds epoch p // n at place p % n at position p (n = examples.num_examples).
  A TFDS shard: position t is epoch t // n at place t % n of the host's own stream. Each example
  is loaded and transformed in one parallel map, after the skip to `start`.

  Args:
    transform: (host position int64, {"image": encoded bytes, "label": float32 (num_classes,)})
      -> the example to yield.

  Returns:
    A dataset of `transform`'s outputs.
  """
  if isinstance(examples, HeldExamples):
    return _held_train_stream(examples, num_classes, seed, process_index, process_count, start,
                              transform)
  return _tfds_train_stream(examples, seed, process_index, start, shuffle_buffer, transform)


def _held_train_stream(examples: HeldExamples, num_classes: int, seed: int, process_index: int,
                       process_count: int, start: int, transform) -> tf.data.Dataset:
  n = examples.num_examples
  if n == 0:
    raise errors.DataError("The train split has no examples; use a larger train_split.")
  first_epoch, offset = divmod(start * process_count + process_index, n)
  order = tf.data.Dataset.counter(first_epoch).flat_map(
      lambda epoch: tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(
          tf.range(n, dtype=tf.int64), preprocess.key(seed, SHUFFLE, epoch))))
  lookup = _lookup(examples, num_classes)
  # After the skip, this host's positions are every process_count-th one.
  return order.skip(offset).shard(process_count, 0).enumerate(start).map(
      lambda position, index: transform(position, lookup(index)),
      num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_train_stream(examples: TfdsShard, seed: int, process_index: int, start: int,
                       shuffle_buffer: int, transform) -> tf.data.Dataset:
  n = examples.num_examples
  if n == 0:
    raise errors.DataError(f"Host {process_index} has no training examples; use fewer hosts or "
                           "more data (its share of the train split is empty).")
  first_epoch, offset = divmod(start, n)
  buffer = min(shuffle_buffer, n)

  def epoch(index):
    file_seed, buffer_seed = tf.unstack(tf.random.stateless_uniform(
        [2], preprocess.key(seed, SHUFFLE, process_index, index), minval=None, maxval=None,
        dtype=tf.int64))
    return examples.read(file_seed).shuffle(buffer, seed=buffer_seed)

  examples_from_start = tf.data.Dataset.counter(first_epoch).flat_map(epoch).skip(offset)
  return examples_from_start.enumerate(start).map(transform, num_parallel_calls=tf.data.AUTOTUNE)


def eval_stream(examples: HeldExamples | TfdsShard, num_classes: int, process_index: int,
                process_count: int, transform: Callable[[dict], dict]) -> tf.data.Dataset:
  """One pass over this host's examples in their fixed order, each loaded and transformed in one
  parallel map. Of held examples a host reads every process_count-th from process_index on; a
  TFDS shard is read whole, in file order.

  Args:
    transform: {"image": encoded bytes, "label": float32 (num_classes,)} -> the example to yield.
  """
  if isinstance(examples, HeldExamples):
    lookup = _lookup(examples, num_classes)
    return tf.data.Dataset.range(examples.num_examples).shard(process_count, process_index).map(
        lambda index: transform(lookup(index)), num_parallel_calls=tf.data.AUTOTUNE)
  return examples.read(None).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
