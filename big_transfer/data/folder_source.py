"""Images in folders: `folder:/path/to/images`.

Two layouts:
  /path/CLASS/*.jpg                 one sub-folder per class: a single split, "train";
  /path/{train,test,...}/CLASS/*.jpg  one sub-folder per split, each holding class folders.
Splits take TFDS-style slices ("train[:90%]", "train[-500:]"). Labels follow the sorted class
folder names of the train split. JPEG and PNG files count (by suffix); other files are ignored.

Each split folder is checked once per process, in parallel: every image is decoded (JPEGs at
1/8 scale, which still reads all their data). Unreadable files are left out, named in a warning
and counted, so that a bad file can never stop a run later. Paths go through epath and tf.io, so
gs:// folders work too.
"""

import dataclasses
import functools
import re

from absl import logging
from etils import epath
import numpy as np
import tensorflow as tf

from big_transfer import errors
from big_transfer.data import config as config_lib
from big_transfer.data import preprocess
from big_transfer.data import sampling
from big_transfer.data import streams

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SPLIT = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


@dataclasses.dataclass(frozen=True)
class FolderSplit:
  """The readable images of one split folder, sorted by class, then file name.

  Attributes:
    paths: object (n,) file paths.
    labels: int64 (n,) class of each image.
    sizes: int64 (n, 2) (height, width) of each image.
    skipped: paths of the unreadable images left out.
  """
  paths: np.ndarray
  labels: np.ndarray
  sizes: np.ndarray
  skipped: tuple[str, ...]


def _subfolders(folder: epath.Path) -> list[epath.Path]:
  return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)


def _split_folders(root: epath.Path) -> dict[str, epath.Path]:
  """Split name -> the folder holding that split's class folders."""
  if not root.is_dir():
    raise errors.DataError(f"Image folder {root} does not exist or is not a folder.")
  subfolders = _subfolders(root)
  if not subfolders:
    raise errors.DataError(f"Image folder {root} has no sub-folders. Put the images of each class "
                           "in a sub-folder named after the class, or use train/ and test/ "
                           "sub-folders that each hold such class folders.")
  if (root / "train").is_dir() and _subfolders(root / "train"):
    return {p.name: p for p in subfolders if _subfolders(p)}
  return {"train": root}


def _decoded_size(encoded: tf.Tensor) -> tf.Tensor:
  """int32 (2,) (height, width) of an image, after decoding all of it (fails on a bad file)."""
  def jpeg():
    with tf.control_dependencies([tf.io.decode_jpeg(encoded, channels=3, ratio=8)]):
      return tf.image.extract_jpeg_shape(encoded)[:2]

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, lambda: tf.shape(preprocess.decode(encoded))[:2])


def _check_images(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """Returns bool (n,) readable and int64 (n, 2) (height, width) of each image file."""
  checked = (tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).enumerate()
             .map(lambda index, path: (index, _decoded_size(tf.io.read_file(path))),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .ignore_errors())
  readable = np.zeros(len(paths), bool)
  sizes = np.zeros((len(paths), 2), np.int64)
  for index, size in checked.as_numpy_iterator():
    readable[index] = True
    sizes[index] = size
  return readable, sizes


@functools.lru_cache(maxsize=16)
def _index_split(folder: str, class_names: tuple[str, ...]) -> FolderSplit:
  """Lists and checks the images of one split folder (cached: it decodes every image)."""
  folder = epath.Path(folder)
  extra = sorted({p.name for p in _subfolders(folder)} - set(class_names))
  if extra:
    raise errors.DataError(f"Split folder {folder} has class folders {extra} that the train split "
                           "lacks; every split must use the train split's classes "
                           f"{list(class_names)}.")
  paths, labels = [], []
  for label, name in enumerate(class_names):
    if not (folder / name).is_dir():
      continue
    files = sorted(str(f) for f in (folder / name).iterdir()
                   if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise errors.DataError(f"Class folder {folder / name} holds no images (files ending in "
                             f"{', '.join(IMAGE_SUFFIXES)}); add images or remove the folder.")
    paths += files
    labels += [label] * len(files)
  readable, sizes = _check_images(paths)
  skipped = tuple(path for path, ok in zip(paths, readable, strict=True) if not ok)
  for path in skipped:
    logging.warning("Skipping unreadable image %s: it does not decode as a JPEG or PNG.", path)
  return FolderSplit(paths=np.array(paths, dtype=object)[readable],
                     labels=np.array(labels, np.int64)[readable], sizes=sizes[readable],
                     skipped=skipped)


def _parse_split(spec: str) -> tuple[str, slice]:
  """Splits "train[10%:-100]" into ("train", slice("10%", "-100")); `_resolve` sizes the slice."""
  match = _SPLIT.match(spec.replace(" ", ""))
  if not match:
    raise errors.ConfigError(f"Split {spec!r} is not NAME or NAME[start:stop] (numbers or "
                             "percentages, e.g. 'train[:90%]'); folder splits cannot be combined "
                             "with '+'.")
  name, start, stop = match.groups()
  return name, slice(start, stop)


def _resolve(bounds: slice, n: int) -> slice:
  """Turns the string bounds of `_parse_split` into indices of a split of n examples."""
  def index(bound):
    if bound is None:
      return None
    if bound.endswith("%"):  # Closest example boundary, as TFDS rounds.
      return round(int(bound[:-1]) * n / 100)
    return int(bound)
  return slice(index(bounds.start), index(bounds.stop))


class FolderSource:
  """An image folder read as an `InputConfig` says.

  Attributes:
    num_classes: number of class folders of the train split.
    class_names: the class folder names, sorted; label i is class_names[i].
  """

  def __init__(self, cfg: config_lib.InputConfig):
    self._cfg = cfg
    self._root = epath.Path(cfg.dataset[len(config_lib.FOLDER_PREFIX):])
    self._folders = _split_folders(self._root)
    train_name, _ = _parse_split(cfg.train_split)
    self.class_names = tuple(p.name for p in _subfolders(self._folder(train_name)))
    self.num_classes = len(self.class_names)

  def _folder(self, name: str) -> epath.Path:
    if name not in self._folders:
      raise errors.DataError(f"Image folder {self._root} has no split {name!r}; its splits: "
                             f"{sorted(self._folders)}. With one sub-folder per class the only "
                             "split is 'train': slice it (e.g. train_split='train[:90%]', "
                             "eval_split='train[90%:]') or use train/ and test/ sub-folders.")
    return self._folders[name]

  def _split(self, spec: str) -> tuple[FolderSplit, np.ndarray]:
    """The checked images of the split folder, and the int64 indices the slice keeps."""
    name, bounds = _parse_split(spec)
    split = _index_split(str(self._folder(name)), self.class_names)
    indices = np.arange(len(split.labels))
    return split, indices[_resolve(bounds, len(indices))]

  def split_size(self, spec: str) -> int:
    """Readable images of the split `spec` (slicing allowed)."""
    return len(self._split(spec)[1])

  def info(self) -> config_lib.DatasetInfo:
    """Training set size (after slicing and few-shot), median image size, classes, skips."""
    cfg = self._cfg
    split, indices = self._split(cfg.train_split)
    k = cfg.examples_per_class
    names = {_parse_split(spec)[0] for spec in (cfg.train_split, cfg.eval_split)}
    skipped = sum(len(_index_split(str(self._folders[name]), self.class_names).skipped)
                  for name in names if name in self._folders)
    return config_lib.DatasetInfo(
        num_train_examples=k * self.num_classes if k else len(indices),
        image_size=preprocess.typical_size(split.sizes[indices]),
        num_classes=self.num_classes, class_names=self.class_names, skipped_images=skipped)

  def train_examples(self, process_index: int, process_count: int) -> streams.HeldExamples:
    """The training images (after the few-shot draw, if any), the same for every host: each
    reads its positions of one global stream (`streams`), so the process is not needed here."""
    del process_index, process_count
    cfg = self._cfg
    split, indices = self._split(cfg.train_split)
    if cfg.examples_per_class:
      indices = indices[sampling.select_per_class(split.labels[indices], cfg.examples_per_class,
                                                  cfg.fewshot_seed, self.class_names)]
    return streams.HeldExamples(split.paths[indices], split.labels[indices], are_paths=True)

  def eval_examples(self, spec: str, process_index: int,
                    process_count: int) -> tuple[streams.HeldExamples, int]:
    """The images of the split `spec` (each host reads every process_count-th, `streams`), and
    their number."""
    del process_index, process_count
    split, indices = self._split(spec)
    return (streams.HeldExamples(split.paths[indices], split.labels[indices], are_paths=True),
            len(indices))
