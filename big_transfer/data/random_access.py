"""Reading a TFDS split whose files TFDS reads only by random access (array_record) into tf.data.

TFDS feeds tf.data from sequential formats (tfrecord) but serves array_record files only as a
random-access data source (`builder.as_data_source`, the reader grain builds on). Here the record
keys of a split are ordered in TensorFlow (in key order, or in a permutation drawn from a seed
tensor), fetched in chunks through that data source as raw serialized examples, and parsed with
the data set's own TFDS features, as `builder.as_dataset` parses a tfrecord file. The rest of the
pipeline cannot tell the two formats apart; a host's sub-split opens only the files that hold it.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# Record keys fetched per read: the data source reads a chunk's keys of each file together, and
# chunks are read in parallel, in order.
_KEYS_PER_READ = 64


def reads_by_random_access(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether TFDS reads the prepared files of `builder` only by random access."""
  file_format = builder.info.file_format  # None in metadata older than the field: tfrecord.
  return bool(file_format) and not (
      tfds.core.file_adapters.ADAPTER_FOR_FORMAT[file_format].SUPPORTS_TF_DATA)


def read(builder: tfds.core.DatasetBuilder, split, decoders: tfds.decode.PartialDecoding,
         order_seed: tf.Tensor | None = None) -> tf.data.Dataset:
  """The examples of `split` (a TFDS split string or sub-split) decoded as `decoders` says.

  Args:
    builder: a prepared data set that `reads_by_random_access`.
    decoders: the features to parse and how to decode them (only these are parsed).
    order_seed: int64 scalar tensor: the examples come in a permutation drawn from it (a new one
      per seed); None: in the order of their record keys, file by file.

  Returns:
    A dataset of {feature: value} dicts, as `builder.as_dataset` yields them.
  """
  source = builder.as_data_source(split=split,
                                  deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  num_records = len(source)
  keys = tf.range(num_records, dtype=tf.int64)
  if order_seed is not None:
    keys = tf.random.experimental.stateless_shuffle(
        keys, tf.stack([order_seed, tf.constant(0, tf.int64)]))

  def fetch(chunk: np.ndarray) -> np.ndarray:
    return np.array(source.__getitems__(chunk.tolist()), dtype=object)

  features = decoders.extract_features(builder.info.features)
  records = tf.data.Dataset.from_tensor_slices(keys).batch(_KEYS_PER_READ).map(
      lambda chunk: tf.ensure_shape(tf.numpy_function(fetch, [chunk], tf.string, stateful=False),
                                    [None]),
      num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  return records.map(
      lambda record: features.deserialize_example(record, decoders=decoders.decoders),
      num_parallel_calls=tf.data.AUTOTUNE)
