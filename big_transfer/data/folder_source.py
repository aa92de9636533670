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

import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath

from big_transfer import errors
from big_transfer.data import config as config_lib
from big_transfer.data import image_repair, preprocess, sampling, streams

IMAGE_SUFFIXES = tuple(image_repair.IMAGE_FORMATS)
# Above this many images in a split folder, checking them all on every host at start costs more
# than converting the folder once into a sharded TFDS data set that each host reads its share of.
CONVERT_ABOVE = 100_000
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


def subfolders(folder: epath.Path) -> list[epath.Path]:
  """The sub-folders of `folder`, sorted by name."""
  return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)


def split_folders(root: epath.Path) -> dict[str, epath.Path]:
  """Split name -> the folder holding that split's class folders."""
  if not root.is_dir():
    raise errors.DataError(f"Image folder {root} does not exist or is not a folder.")
  children = subfolders(root)
  if not children:
    raise errors.DataError(f"Image folder {root} has no sub-folders. Put the images of each class "
                           "in a sub-folder named after the class, or use train/ and test/ "
                           "sub-folders that each hold such class folders.")
  if (root / "train").is_dir() and subfolders(root / "train"):
    return {p.name: p for p in children if subfolders(p)}
  return {"train": root}


def _check_images(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """Returns bool (n,) readable and int64 (n, 2) (height, width) of each image file."""
  checked = (tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).enumerate()
             .map(lambda index, path: (index, image_repair.decoded_size(tf.io.read_file(path))),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .ignore_errors())
  readable = np.zeros(len(paths), bool)
  sizes = np.zeros((len(paths), 2), np.int64)
  for index, size in checked.as_numpy_iterator():
    readable[index] = True
    sizes[index] = size
  return readable, sizes


@functools.lru_cache(maxsize=16)
def _index_split(folder: str, class_names: tuple[str, ...], root: str) -> FolderSplit:
  """Lists and checks the images of one split folder of the `folder:` data set at root (cached:
  it decodes every image)."""
  folder = epath.Path(folder)
  extra = sorted({p.name for p in subfolders(folder)} - set(class_names))
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
  if len(paths) > CONVERT_ABOVE:
    logging.warning(
        "Image folder %s holds %d images: every host lists and checks all of them at start. "
        "Convert it once into a sharded TFDS data set, which each host reads its share of: "
        "python -m big_transfer.data.convert --source=folder:%s --name=NAME --data_dir=DIR "
        "(then dataset=NAME, data.data_dir=DIR; docs/data.md).", folder, len(paths), root)
  readable, sizes = _check_images(paths)
  if not readable.any():  # Said once, rather than as one warning per file.
    raise errors.DataError(f"No image in {folder} could be read: none of its {len(paths)} image "
                           f"files decodes as a JPEG or PNG (e.g. {paths[0]}). Check that they "
                           "are images and not partial downloads or Git LFS pointers.")
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
    self._folders = split_folders(self._root)
    train_name, _ = _parse_split(cfg.train_split)
    train_folder = self._folder(train_name)
    self.class_names = tuple(p.name for p in subfolders(train_folder))
    self.num_classes = len(self.class_names)
    if self.num_classes < config_lib.MIN_CLASSES:  # split_folders saw at least one sub-folder.
      only = self.class_names[0]
      raise errors.DataError(
          f"Image folder {train_folder} has one class folder, {only!r}: a classifier needs at "
          f"least {config_lib.MIN_CLASSES} classes, each in a sub-folder named after it. Point "
          f"folder: at the folder whose sub-folders are the classes "
          f"(folder:{train_folder / only} if the classes are inside {only!r}).")

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
    split = _index_split(str(self._folder(name)), self.class_names, str(self._root))
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
    skipped = sum(len(_index_split(str(self._folders[name]), self.class_names,
                                   str(self._root)).skipped)
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
