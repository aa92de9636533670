"""The input pipeline's entry points: data set facts, training batches, evaluation batches.

Batches are host-local NumPy dicts: {"image": float32 (local_batch, crop, crop, 3) in [-1, 1],
"label": float32 (local_batch, num_classes)}, plus "mask": float32 (local_batch,) in evaluation.
local_batch = global_batch_size / process_count. `process_index` and `process_count` default to
JAX's; tests pass them to simulate several hosts in one process.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from big_transfer import errors
from big_transfer.data import (class_lists, eval_sets, folder_source, objectnet, preprocess,
                               sampling, streams, tfds_source)
from big_transfer.data import config as config_lib


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
                 *, process_index: int | None = None, process_count: int | None = None,
                 source=None, border: int = 0) -> Iterator[dict]:
  """One pass over `split` (default cfg.eval_split) in which every example counts once.

  Each host reads its share, then pads with masked-out zero examples so that every host yields
  the same number of batches: ceil(ceil(num_examples / process_count) / local_batch).

  Args:
    source: read from this source (an evaluation set's, `eval_set_pass`) instead of cfg's.
    border: pixels cut from each side of every image before the evaluation view.

  Returns:
    An iterator of {"image": float32 (local_batch, crop, crop, 3) in [-1, 1],
    "label": float32 (local_batch, num_classes), "mask": float32 (local_batch,)}, mask 1 for
    real examples and 0 for padding.
  """
  index, count = sampling.process(process_index, process_count)
  local_batch = sampling.local_batch_size(global_batch_size, count)
  source = source or _open(cfg)
  examples, num_examples = source.eval_examples(split or cfg.eval_split, index, count)
  num_batches = _ceil_div(_ceil_div(num_examples, count), local_batch)
  real = streams.eval_stream(
      examples, source.num_classes, index, count,
      lambda example: {"image": preprocess.eval_image(example["image"], cfg.recipe, cfg.crop,
                                                      border),
                       "label": example["label"], "mask": tf.constant(1.0)})
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([cfg.crop, cfg.crop, 3]), "label": tf.zeros([source.num_classes]),
      "mask": tf.constant(0.0)}).repeat()
  # `take` rather than a computed padding count: every host yields exactly num_batches batches.
  ds = real.concatenate(padding).take(num_batches * local_batch).batch(local_batch)
  return _numpy_batches(ds)


@dataclasses.dataclass(frozen=True)
class EvalPass:
  """One pass over an evaluation set (`eval_set_pass`).

  Attributes:
    batches: host batches as `eval_batches` yields them; "label" is float32 (local_batch, L)
      over the set's own L labels (multi-hot for ReaL's sets).
    num_examples: examples of the whole set, over all hosts.
    accepts: bool (L, 1000): the ImageNet-1k classes each label counts as a hit.
    shown: bool (1000,): the ImageNet-1k classes the set's images can show.
  """
  batches: Iterator[dict]
  num_examples: int
  accepts: np.ndarray
  shown: np.ndarray


def _eval_set_source(eval_set: eval_sets.EvalSet, cfg: config_lib.InputConfig):
  if eval_set.dataset == eval_sets.OBJECTNET:
    return objectnet.ObjectNetSource(eval_set.folder)
  return tfds_source.TfdsSource(cfg, label_key=eval_set.label_key)


def check_eval_set(eval_set: eval_sets.EvalSet, data_dir: str | None) -> int:
  """Opens an evaluation set without reading images; returns its number of examples. A set that
  is not prepared raises a DataError naming the command that prepares it."""
  if eval_set.dataset == eval_sets.OBJECTNET:
    return _eval_set_source(eval_set, None).eval_examples(eval_set.split, 0, 1)[1]
  return split_size(config_lib.InputConfig(dataset=eval_set.dataset, data_dir=data_dir),
                    eval_set.split)


def eval_set_pass(eval_set: eval_sets.EvalSet, data_dir: str | None, recipe: str, crop: int,
                  global_batch_size: int, *, process_index: int | None = None,
                  process_count: int | None = None) -> EvalPass:
  """One pass over an evaluation set in the evaluation view (`preprocess.eval_view` of `recipe`
  at `crop`), every example once over all hosts, with what its labels mean in ImageNet-1k."""
  cfg = config_lib.InputConfig(dataset=eval_set.dataset, data_dir=data_dir, recipe=recipe,
                               crop=crop, precrop=crop, eval_split=eval_set.split)
  source = _eval_set_source(eval_set, cfg)
  index, count = sampling.process(process_index, process_count)
  num_examples = source.eval_examples(eval_set.split, index, count)[1]
  if isinstance(source, objectnet.ObjectNetSource):
    accepts = np.zeros((source.num_classes, class_lists.IMAGENET_CLASSES), bool)
    for label, classes in enumerate(source.mapping.imagenet_classes):
      accepts[label, list(classes)] = True
    border = objectnet.BORDER
  else:
    accepts = np.eye(class_lists.IMAGENET_CLASSES, dtype=bool)
    border = 0
  if source.num_classes != accepts.shape[0]:
    raise errors.DataError(f"Evaluation set {eval_set.name!r} has {source.num_classes} classes; "
                           f"its evaluator scores the {accepts.shape[0]} of ImageNet-1k.")
  if eval_set.subset:
    shown = np.zeros(class_lists.IMAGENET_CLASSES, bool)
    shown[class_lists.subset_indices(eval_set.subset)] = True
  else:
    shown = accepts.any(axis=0)
  batches = eval_batches(cfg, global_batch_size, eval_set.split, process_index=index,
                         process_count=count, source=source, border=border)
  return EvalPass(batches, num_examples, accepts, shown)
