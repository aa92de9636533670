"""What a conversion reads: `folder:DIR` (the layouts of `folder:` data sets) or `tar:ARCHIVE`
(a tar of tars, one per class, as ImageNet-21k's fall 2011 and winter 2021 releases), plain or
compressed (gzip, bzip2, xz: unpacked into its class tars in one streaming pass first).

The work is cut into units, one per class of each split, so that a worker (a thread here, a Beam
worker elsewhere) lists and reads one class; no machine lists every image. With
`--split_percent`, each image goes to a split by a hash of its name within its class: the same
image lands in the same split whatever else the source holds.
"""

import collections
import dataclasses
import hashlib
import re
import shutil
import tarfile
from collections.abc import Iterator

import tensorflow as tf
from absl import logging
from etils import epath

from big_transfer import atomic, errors
from big_transfer.data import folder_source, image_repair

FOLDER, TAR = "folder:", "tar:"
# The split of a source without splits: folder_source's, and big_vision's for ImageNet-21k.
FOLDER_SPLIT, TAR_SPLIT = "train", "full"
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The first bytes of gzip, bzip2 and xz streams: the compressions tarfile reads as a stream.
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_COPY_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class Unit:
  """One class of one output split: what one worker converts.

  Attributes:
    split: the output split.
    class_name: the class; `label` is its place in the label order.
    label: int label of the class's examples.
    path: the class folder, or the outer archive of a tar of tars.
    offset: the byte offset of the class's tar inside the archive; None for a class folder.
    size: the byte size of the class's tar inside the archive.
    hash_range: the fractions [low, high) of name hashes this split takes.
  """
  split: str
  class_name: str
  label: int
  path: str
  offset: int | None = None
  size: int = 0
  hash_range: tuple[float, float] = (0.0, 1.0)


def parse_split_percent(spec: str) -> dict[str, int]:
  """"train=99,validation=1" -> {"train": 99, "validation": 1}; the percentages add up to 100."""
  splits = {}
  for part in spec.split(","):
    name, _, value = part.strip().partition("=")
    if not _SPLIT_NAME.match(name) or not value.isdigit() or name in splits:
      raise errors.ConfigError(f"--split_percent={spec!r}: each part must be NAME=PERCENT (a "
                               "lower-case split name, a whole percentage), each name once, e.g. "
                               "train=99,validation=1.")
    splits[name] = int(value)
  if sum(splits.values()) != 100 or min(splits.values()) < 1:
    raise errors.ConfigError(f"--split_percent={spec!r}: the percentages must each be at least 1 "
                             f"and add up to 100 (they add up to {sum(splits.values())}).")
  return splits


def hash_fraction(name: str) -> float:
  """A fraction in [0, 1) that depends only on `name` (stable across machines and runs)."""
  return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _tar_classes(archive: epath.Path) -> dict[str, tuple[int, int]] | None:
  """Class name -> (offset, size) of its tar inside the tar of tars `archive`; None for a
  compressed archive, whose members cannot be reached by offset."""
  if not archive.is_file():
    raise errors.DataError(f"Archive {archive} does not exist or is not a file.")
  with tf.io.gfile.GFile(str(archive), "rb") as f:
    try:
      # "r:" reads headers and seeks past the data: no image is read to list the classes.
      with tarfile.open(fileobj=f, mode="r:") as outer:
        members = [m for m in outer if m.isfile() and m.name.endswith(".tar")]
    except tarfile.ReadError:
      f.seek(0)
      if f.read(8).startswith(_COMPRESSED):
        return None
      raise errors.DataError(f"Archive {archive} is not a tar, nor a tar compressed with gzip, "
                             "bzip2 or xz; --source=tar: reads a tar of tars. For an archive of "
                             "class folders, extract it and convert --source=folder:DIR.") from None
  _check_members(archive, members)
  return {epath.Path(m.name).stem: (m.offset_data, m.size) for m in members}


def _check_members(archive: epath.Path, members: list[tarfile.TarInfo]) -> None:
  if not members:
    raise errors.DataError(f"Archive {archive} holds no .tar files; --source=tar: reads a tar of "
                           "tars, one per class (CLASS.tar holding its images), as ImageNet-21k is "
                           "distributed. For class folders use --source=folder:DIR.")


def _unpacked_classes(archive: epath.Path, into: epath.Path) -> dict[str, tuple[str, int, int]]:
  """Copies each CLASS.tar of the compressed tar of tars `archive` into `into`, in one streaming
  pass (a compressed stream cannot be entered elsewhere than at its start); a class tar copied
  whole by an interrupted pass is kept. Returns class name -> (its copy, 0, its size)."""
  classes, members = {}, []
  with tf.io.gfile.GFile(str(archive), "rb") as f:
    with tarfile.open(fileobj=f, mode="r|*") as outer:
      for member in outer:
        if not (member.isfile() and member.name.endswith(".tar")):
          continue
        members.append(member)
        name = epath.Path(member.name).stem
        copy = into / f"{name}.tar"
        # A copy gets its name only once complete (atomic); the size guards against the rest.
        if not (copy.exists() and copy.stat().length == member.size):
          into.mkdir(parents=True, exist_ok=True)
          with atomic.staged(copy) as staging, staging.open("wb") as out:
            shutil.copyfileobj(outer.extractfile(member), out, _COPY_CHUNK)
        classes[name] = (str(copy), 0, member.size)
        logging.log_every_n_seconds(logging.INFO, "Unpacking %s: %d class tars so far.", 60,
                                    archive, len(classes))
  _check_members(archive, members)
  return classes


def plan(source: str, split_percent: dict[str, int] | None, order_of,
         unpack_dir: str) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, list[Unit]]]:
  """Lists a source's classes (not its images) and cuts the work into units; a compressed tar of
  tars is first unpacked into its class tars, in one pass.

  Args:
    source: "folder:DIR" or "tar:ARCHIVE", local or gs://.
    split_percent: output split -> percentage, or None for the source's own splits.
    order_of: the present class names -> (class names in label order, those absent), e.g.
      `class_orders.label_order` with the chosen order.
    unpack_dir: where a compressed archive's class tars are copied (the conversion's work dir).

  Returns:
    (class names in label order, absent class names, {output split: its units}).
  """
  if source.startswith(FOLDER):
    root = epath.Path(source[len(FOLDER):])
    split_folders = folder_source.split_folders(root)
    classes = {split: {p.name: (str(p), None, 0) for p in folder_source.subfolders(folder)}
               for split, folder in split_folders.items()}
    train = classes.get(FOLDER_SPLIT) or next(iter(classes.values()))
    for split, split_classes in classes.items():  # As folder_source demands of its splits.
      extra = sorted(set(split_classes) - set(train))
      if extra:
        raise errors.DataError(f"Split folder {split_folders[split]} has class folders {extra} "
                               f"that the {FOLDER_SPLIT} split lacks; every split must use the "
                               "same classes.")
  elif source.startswith(TAR):
    archive = epath.Path(source[len(TAR):])
    members = _tar_classes(archive)
    if members is None:
      classes = {TAR_SPLIT: _unpacked_classes(archive, epath.Path(unpack_dir))}
    else:
      classes = {TAR_SPLIT: {name: (str(archive), offset, size)
                             for name, (offset, size) in members.items()}}
  else:
    raise errors.ConfigError(f"--source={source!r} must be folder:DIR or tar:ARCHIVE (a tar of "
                             "tars, one per class).")
  names, absent = order_of(sorted({name for split in classes.values() for name in split}))
  label = {name: i for i, name in enumerate(names)}
  units = collections.defaultdict(list)
  if split_percent:
    if len(classes) > 1:
      raise errors.ConfigError(f"{source} has splits {sorted(classes)} of its own; drop "
                               "--split_percent, or convert a folder of class folders.")
    own_classes = sorted(next(iter(classes.values())).items())
    low = 0
    for split, percent in split_percent.items():
      units[split] = [Unit(split, name, label[name], path, offset, size,
                           (low / 100, (low + percent) / 100)) for name, (path, offset, size)
                      in own_classes]
      low += percent
  else:
    for split, split_classes in classes.items():
      units[split] = [Unit(split, name, label[name], path, offset, size)
                      for name, (path, offset, size) in sorted(split_classes.items())]
  return names, absent, dict(units)


class _Window:
  """The `size` bytes at `offset` of a file, as a read-only stream (a class tar in the archive)."""

  def __init__(self, f, offset: int, size: int):
    f.seek(offset)
    self._f, self._left = f, size

  def read(self, n: int = -1) -> bytes:
    n = self._left if n < 0 else min(n, self._left)
    data = self._f.read(n)
    self._left -= len(data)
    return data


def files(unit: Unit) -> Iterator[tuple[str, bytes]]:
  """(file name, bytes) of the unit's images: those with an image suffix whose name hash falls in
  its range. Folders are listed in sorted order; a class tar is streamed in archive order."""
  def taken(name):
    low, high = unit.hash_range
    return image_repair.image_format(name) and low <= hash_fraction(name) < high

  if unit.offset is None:
    for path in sorted(p for p in epath.Path(unit.path).iterdir() if taken(p.name)):
      yield path.name, path.read_bytes()
    return
  with tf.io.gfile.GFile(unit.path, "rb") as f:
    with tarfile.open(fileobj=_Window(f, unit.offset, unit.size), mode="r|") as inner:
      for member in inner:
        name = epath.Path(member.name).name
        if member.isfile() and taken(name):
          yield name, inner.extractfile(member).read()
