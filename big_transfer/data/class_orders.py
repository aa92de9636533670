"""The label order of a converted data set: the source's sorted class names, the published
ImageNet-21k order, or a list in a file.

The published BiT-M heads have 21,843 logits, one per WordNet id of Google's ImageNet-21k (owned
by `class_lists.imagenet21k_synsets`). ImageNet's fall 2011 release lacks 2 of those synsets
(n03931044, n09859684) and winter 2021, with about 19,167 synsets, lacks some 2,700; converted in
this order, a release lines up with the published heads: the absent synsets keep their labels,
without examples, and the conversion report lists them.
"""

from etils import epath

from big_transfer import errors
from big_transfer.data import class_lists

SORTED = "sorted"
IMAGENET21K = "imagenet21k"


def label_order(present: list[str], classes: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """The class names in label order, and those of them the source lacks.

  Args:
    present: the class names the source holds.
    classes: "sorted" (the source's own classes, sorted: e.g. winter 2021's own list),
      "imagenet21k" (the published 21,843-way order), or the path of a text file with one class
      name per line.
  """
  if classes == SORTED:
    return tuple(sorted(present)), ()
  if classes == IMAGENET21K:
    order = class_lists.imagenet21k_synsets()
  else:
    path = epath.Path(classes)
    if not path.is_file():
      raise errors.ConfigError(f"--classes={classes!r} is neither {SORTED!r}, {IMAGENET21K!r} nor "
                               "a text file with one class name per line.")
    order = class_lists.entries(path.read_text())
    if len(set(order)) != len(order):
      raise errors.DataError(f"Class list {classes} names some classes twice; each must appear "
                             "once.")
  unknown = sorted(set(present) - set(order))
  if unknown:
    shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    raise errors.DataError(f"The source has {len(unknown)} classes that --classes={classes} lacks: "
                           f"{shown}. Use --classes={SORTED} for the source's own classes, or a "
                           "class list that names them.")
  held = set(present)
  return order, tuple(name for name in order if name not in held)
