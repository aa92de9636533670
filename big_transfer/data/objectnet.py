"""ObjectNet 1.0 from the user's unpacked folder (it has no TFDS builder, and its licence forbids
training on it): `DIR/images/FOLDER/*.png` and the mapping files of `DIR/mappings/`.

Of its 313 classes, the 113 that ImageNet-1k shares are scored; they map to 125 ImageNet
classes (a few ObjectNet classes cover several). The mapping is read from the release's own
files, as imagenet-testbed and wise-ft read them:
  folder_to_objectnet_label.json     image folder -> ObjectNet class name;
  objectnet_to_imagenet_1k.json      ObjectNet class name -> "ImageNet name; ImageNet name";
  imagenet_to_label_2012_v2          line i: the ImageNet name of ImageNet 2012 id i;
  pytorch_to_imagenet_2012_id.json   ImageNet-1k label (sorted WordNet ids, as TFDS's) -> 2012 id.
Folders of the other classes are skipped. Labels are ObjectNet class indices (the mapped folders,
sorted); `imagenet_classes` says which ImageNet labels each one accepts.
"""

import dataclasses
import json

import numpy as np
from etils import epath

from big_transfer import errors
from big_transfer.data import streams

MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
            "imagenet_to_label_2012_v2", "pytorch_to_imagenet_2012_id.json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The official protocol cuts this many pixels from each side: the images have a thin frame.
BORDER = 2


@dataclasses.dataclass(frozen=True)
class Mapping:
  """The ObjectNet classes shared with ImageNet-1k.

  Attributes:
    folders: the image folder of each shared class, sorted; label i is folders[i].
    imagenet_classes: for each, the ImageNet-1k labels it accepts.
  """
  folders: tuple[str, ...]
  imagenet_classes: tuple[tuple[int, ...], ...]


def _load_json(path: epath.Path):
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.DataError(f"ObjectNet mapping file {path} is not valid JSON ({e}); unpack the "
                           "release's mappings/ folder again.") from None


def read_mapping(root) -> Mapping:
  """Reads `root/mappings/`: which image folders to score and their ImageNet labels."""
  mappings = epath.Path(root) / "mappings"
  missing = [name for name in MAPPINGS if not (mappings / name).exists()]
  if missing:
    raise errors.DataError(f"ObjectNet folder {root} lacks {', '.join(missing)} in "
                           f"{mappings}: pass objectnet:DIR with DIR the unpacked objectnet-1.0 "
                           "folder (it holds images/ and mappings/).")
  folder_of = {label: folder for folder, label in
               _load_json(mappings / "folder_to_objectnet_label.json").items()}
  id_of_name = {line.strip(): i for i, line in
                enumerate((mappings / "imagenet_to_label_2012_v2").read_text().splitlines())}
  label_of_id = {int(i): int(label) for label, i in
                 _load_json(mappings / "pytorch_to_imagenet_2012_id.json").items()}
  shared = {}
  for objectnet_name, imagenet_names in _load_json(
      mappings / "objectnet_to_imagenet_1k.json").items():
    try:
      shared[folder_of[objectnet_name]] = tuple(sorted(
          label_of_id[id_of_name[name]] for name in imagenet_names.split("; ")))
    except KeyError as e:
      raise errors.DataError(f"ObjectNet mappings in {mappings} disagree: {e} of class "
                             f"{objectnet_name!r} is not in the other files.") from None
  folders = tuple(sorted(shared))
  return Mapping(folders, tuple(shared[f] for f in folders))


class ObjectNetSource:
  """The images of ObjectNet's classes shared with ImageNet-1k, for one evaluation pass.

  Attributes:
    num_classes: number of shared ObjectNet classes (113 in the release).
    class_names: their image folders.
    mapping: the `Mapping` read from the folder.
  """

  def __init__(self, root):
    self._root = epath.Path(root)
    self.mapping = read_mapping(root)
    self.class_names = self.mapping.folders
    self.num_classes = len(self.class_names)

  def _images(self) -> tuple[np.ndarray, np.ndarray]:
    images = self._root / "images"
    paths, labels = [], []
    for label, folder in enumerate(self.mapping.folders):
      if not (images / folder).is_dir():
        raise errors.DataError(f"ObjectNet folder {images} lacks the class folder {folder!r} "
                               "that its mappings name; unpack the whole release.")
      files = sorted(str(f) for f in (images / folder).iterdir()
                     if f.suffix.lower() in IMAGE_SUFFIXES)
      paths += files
      labels += [label] * len(files)
    return np.array(paths, dtype=object), np.array(labels, np.int64)

  def eval_examples(self, split: str, process_index: int,
                    process_count: int) -> tuple[streams.HeldExamples, int]:
    """Every image of the shared classes (each host reads every process_count-th, `streams`),
    and their number; ObjectNet has one split, `split` is ignored."""
    del split, process_index, process_count
    paths, labels = self._images()
    return streams.HeldExamples(paths, labels, are_paths=True), len(labels)
