"""The input pipeline's entry points: data set facts, training batches, evaluation batches.

Batches are host-local NumPy dicts: {"image": float32 (local_batch, crop, crop, 3) in [-1, 1],
"label": float32 (local_batch, num_classes)}, plus "mask": float32 (local_batch,) in evaluation.
local_batch = global_batch_size / process_count. `process_index` and `process_count` default to
JAX's; tests pass them to simulate several hosts in one process.
"""

from collections.abc import Iterator

import tensorflow as tf

from big_transfer.data import config as config_lib
from big_transfer.data import folder_source
from big_transfer.data import preprocess
from big_transfer.data import sampling
from big_transfer.data import streams
from big_transfer.data import tfds_source


def _open(cfg: config_lib.InputConfig) -> tfds_source.TfdsSource | folder_source.FolderSource:
  return folder_source.FolderSource(cfg) if cfg.is_folder else tfds_source.TfdsSource(cfg)


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _numpy_batches(ds: tf.data.Dataset) -> Iterator[dict]:
  options = tf.data.Options()
  options.deterministic = True
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options).as_numpy_iterator()


def dataset_info(cfg: config_lib.InputConfig) -> config_lib.DatasetInfo:
  """Number of training examples, typical image size and classes of the configured data.

  TFDS: sizes from its metadata (of the sliced split); the image size from the image feature when
  fixed, else from `big_transfer.data.dataset_table`, else the median of a few image headers.
  Folders: counted and measured (median) while checking their images. A few-shot config has
  examples_per_class * num_classes training examples.
  """
  return _open(cfg).info()


def split_size(cfg: config_lib.InputConfig, split: str) -> int:
  """Number of examples of `split` (TFDS slicing allowed); a DataError names the splits there are.

  Cheap for TFDS (metadata); a folder split is listed and checked once (then cached).
  """
  return _open(cfg).split_size(split)


def train_batches(cfg: config_lib.InputConfig, global_batch_size: int, seed: int,
                  start_step: int = 0, *, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict]:
  """The endless training batches of this host from step `start_step` on.

  The stream is a pure function of (cfg, seed, step) for a given process count: starting at
  step s yields exactly what an uninterrupted run yields from step s on (docs/data.md).

  Returns:
    An iterator of {"image": float32 (local_batch, crop, crop, 3) in [-1, 1],
    "label": float32 (local_batch, num_classes)} (one-hot, multi-hot or MixUp-soft).
  """
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  index, count = sampling.process(process_index, process_count)
  local_batch = sampling.local_batch_size(global_batch_size, count)
  source = _open(cfg)
  host_key = preprocess.key(seed, streams.AUGMENT, index)

  def augment(position, example):
    rng = tf.random.experimental.stateless_fold_in(host_key, position)
    image = preprocess.train_image(example["image"], cfg.recipe, cfg.precrop, cfg.crop, rng)
    return {"image": image, "label": example["label"]}

  ds = streams.train_stream(source.train_examples(index, count), source.num_classes, seed, index,
                            count, start_step * local_batch, cfg.shuffle_buffer, augment)
  # A plain batch right after the parallel map lets tf.data fuse the two (map_and_batch), which
  # writes each image straight into its batch; a parallel batch would copy it once more.
  ds = ds.batch(local_batch, drop_remainder=True)
  if cfg.mixup_alpha > 0:
    ds = ds.enumerate(start_step).map(
        lambda step, batch: preprocess.mixup(batch, cfg.mixup_alpha,
                                             preprocess.key(seed, streams.MIXUP, step)),
        num_parallel_calls=tf.data.AUTOTUNE)
  return _numpy_batches(ds)


def eval_batches(cfg: config_lib.InputConfig, global_batch_size: int, split: str | None = None,
                 *, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict]:
  """One pass over `split` (default cfg.eval_split) in which every example counts once.

  Each host reads its share, then pads with masked-out zero examples so that every host yields
  the same number of batches: ceil(ceil(num_examples / process_count) / local_batch).

  Returns:
    An iterator of {"image": float32 (local_batch, crop, crop, 3) in [-1, 1],
    "label": float32 (local_batch, num_classes), "mask": float32 (local_batch,)}, mask 1 for
    real examples and 0 for padding.
  """
  index, count = sampling.process(process_index, process_count)
  local_batch = sampling.local_batch_size(global_batch_size, count)
  source = _open(cfg)
  examples, num_examples = source.eval_examples(split or cfg.eval_split, index, count)
  num_batches = _ceil_div(_ceil_div(num_examples, count), local_batch)
  real = streams.eval_stream(
      examples, source.num_classes, index, count,
      lambda example: {"image": preprocess.eval_image(example["image"], cfg.recipe, cfg.crop),
                       "label": example["label"], "mask": tf.constant(1.0)})
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([cfg.crop, cfg.crop, 3]), "label": tf.zeros([source.num_classes]),
      "mask": tf.constant(0.0)}).repeat()
  # `take` rather than a computed padding count: every host yields exactly num_batches batches.
  ds = real.concatenate(padding).take(num_batches * local_batch).batch(local_batch)
  return _numpy_batches(ds)
