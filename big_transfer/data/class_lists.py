"""ImageNet class lists shipped with the package (`big_transfer/data/labels/`, each file naming
its source in its header): the WordNet ids of the 1k classes and of the 21,843 logits of the
published BiT-M heads, and the 200 ImageNet-1k classes of ImageNet-A and ImageNet-R.

NumPy only, so the scoring of `big_transfer.training.evaluators` needs no TensorFlow.
"""

import functools
import importlib.resources

import numpy as np

from big_transfer import errors

# The sets whose images show only 200 of the ImageNet-1k classes -> the file listing them.
SUBSETS = {"imagenet_a": "imagenet_a_indices.txt", "imagenet_r": "imagenet_r_indices.txt"}
IMAGENET_CLASSES = 1000
IMAGENET21K_CLASSES = 21_843


def entries(text: str) -> tuple[str, ...]:
  """The entries of a class list: one per line, less blank lines and '#' lines (the header)."""
  return tuple(line.strip() for line in text.splitlines()
               if line.strip() and not line.startswith("#"))


@functools.cache
def _lines(name: str) -> tuple[str, ...]:
  """The entries of a shipped list."""
  return entries((importlib.resources.files("big_transfer.data") / "labels" / name).read_text())


def imagenet_synsets() -> tuple[str, ...]:
  """WordNet ids of the ImageNet-1k classes in label order (TFDS imagenet2012: sorted ids)."""
  return _lines("imagenet_synsets.txt")


def imagenet21k_synsets() -> tuple[str, ...]:
  """WordNet ids of the 21,843 logits of the published BiT-M (ImageNet-21k) heads, in order."""
  return _lines("imagenet21k_goog_synsets.txt")


def subset_indices(name: str) -> np.ndarray:
  """int64 (200,) ascending ImageNet-1k indices of the classes of `name` (a key of SUBSETS)."""
  return np.array([int(i) for i in _lines(SUBSETS[name])], np.int64)


@functools.cache
def i21k_to_i1k() -> np.ndarray:
  """int64 (1000,): for each ImageNet-1k class, the logit of the 21k head with its WordNet id,
  or -1 where the 21k classes lack it (n04399382, teddy bear: the one 1k class missing from
  ImageNet-21k's fall 2011 release, which the published heads were trained on)."""
  position = {wnid: i for i, wnid in enumerate(imagenet21k_synsets())}
  return np.array([position.get(wnid, -1) for wnid in imagenet_synsets()], np.int64)


# What `label_map` may name: how a head's logits become ImageNet-1k's.
LABEL_MAPS = {"i21k_to_i1k": i21k_to_i1k}


def label_map_index(name: str) -> np.ndarray | None:
  """The int64 (1000,) head logit of each ImageNet-1k class under the label map `name` (-1:
  none), or None for "" (the head is ImageNet-1k's already)."""
  if not name:
    return None
  if name not in LABEL_MAPS:
    raise errors.ConfigError(f"Unknown label_map {name!r}; choose one of "
                             f"{', '.join(LABEL_MAPS)}, or '' for a 1000-way ImageNet head.")
  return LABEL_MAPS[name]()
