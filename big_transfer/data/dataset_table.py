"""Facts about the standard transfer data sets, known without the data present.

BiT-HyperRule needs two numbers per task: how many labelled training examples there are
(schedule length, MixUp) and how large the images are (resolution). This table holds them for
the data sets of the BiT paper and the 19 VTAB-1k tasks, so that a fine-tuning config resolves on
a machine that has not prepared the data yet. Image sizes are typical (height, width) in pixels;
for sets of varying size they are the usual size, which is all the HyperRule looks at (area below
or above 96x96).
"""

import dataclasses
import re
from collections.abc import Mapping

from big_transfer import errors
from big_transfer.data import vtab

_PERCENT_SLICE = re.compile(r"^(\w+)\[(-?\d+)?%?:(-?\d+)?%\]$")


def examples_in(split: str, split_sizes: Mapping[str, int]) -> int:
  """Examples of a TFDS split spec ("train", "train[:98%]", "train[99%:]", "a+b") given the sizes
  of the whole splits, rounded to the closest example as TFDS slices percentages."""
  total = 0
  for part in split.split("+"):
    part = part.strip()
    if part in split_sizes:
      total += split_sizes[part]
      continue
    match = _PERCENT_SLICE.match(part)
    if not match or match.group(1) not in split_sizes:
      raise errors.ConfigError(f"Split {part!r} is not a split of {sorted(split_sizes)} or a "
                               "percent slice of one such as 'train[:98%]'.")
    size = split_sizes[match.group(1)]
    bound = lambda text, default: (int(round(int(text) % 100 * size / 100))
                                   if text not in (None, "100") else default)
    total += bound(match.group(3), size) - bound(match.group(2), 0)
  return total


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
  """What the HyperRule and the model head need to know about a data set.

  Attributes:
    tfds_name: TFDS name (with config) the data is read from; a VTAB-1k task's own name, which
      the TFDS source resolves (big_transfer.data.vtab).
    split_sizes: examples of each whole split the table uses, as TFDS publishes them.
    image_size: typical (height, width) in pixels.
    num_classes: number of labels.
    train_split: TFDS split that holds the training examples.
    eval_split: TFDS split used for evaluation.
  """
  tfds_name: str
  split_sizes: Mapping[str, int]
  image_size: tuple[int, int]
  num_classes: int
  train_split: str = "train"
  eval_split: str = "test"

  @property
  def train_examples(self) -> int:
    """Labelled training examples of the transfer split."""
    return examples_in(self.train_split, self.split_sizes)


# Typical image size of each VTAB-1k task; its data set, classes and splits are in vtab.py.
_VTAB_IMAGE_SIZES = {
    "vtab/caltech101": (200, 300),
    "vtab/cifar100": (32, 32),
    "vtab/dtd": (480, 640),
    "vtab/oxford_flowers102": (500, 625),
    "vtab/oxford_iiit_pet": (375, 500),
    "vtab/sun397": (300, 400),
    "vtab/svhn": (32, 32),
    "vtab/patch_camelyon": (96, 96),
    "vtab/eurosat": (64, 64),
    "vtab/resisc45": (256, 256),
    "vtab/diabetic_retinopathy": (300, 300),
    "vtab/clevr_count": (320, 480),
    "vtab/clevr_distance": (320, 480),
    "vtab/dmlab": (360, 480),
    "vtab/kitti_distance": (375, 1242),
    "vtab/dsprites_location": (64, 64),
    "vtab/dsprites_orientation": (64, 64),
    "vtab/smallnorb_azimuth": (96, 96),
    "vtab/smallnorb_elevation": (96, 96),
}


def _vtab(name: str, image_size: tuple[int, int]) -> DatasetFacts:
  """A VTAB-1k task: fine-tuned on its 1000 train800val200 examples, reported on test."""
  return DatasetFacts(name, {vtab.TRAIN800VAL200: vtab.NUM_TRAIN_EXAMPLES}, image_size,
                      vtab.lookup(name).num_classes, train_split=vtab.TRAIN800VAL200,
                      eval_split=vtab.TEST)


KNOWN: dict[str, DatasetFacts] = {
    # The released fine-tuning code keeps the last 2% of CIFAR's and 1% of ImageNet's training
    # images out as a minival, so the transfer split is the rest.
    "cifar10": DatasetFacts("cifar10", {"train": 50_000, "test": 10_000}, (32, 32), 10,
                            train_split="train[:98%]"),
    "cifar100": DatasetFacts("cifar100", {"train": 50_000, "test": 10_000}, (32, 32), 100,
                             train_split="train[:98%]"),
    "oxford_iiit_pet": DatasetFacts("oxford_iiit_pet", {"train": 3_680, "test": 3_669},
                                    (375, 500), 37),
    "oxford_flowers102": DatasetFacts("oxford_flowers102",
                                      {"train": 1_020, "validation": 1_020, "test": 6_149},
                                      (500, 625), 102),
    "imagenet2012": DatasetFacts("imagenet2012", {"train": 1_281_167, "validation": 50_000},
                                 (375, 500), 1000, train_split="train[:99%]",
                                 eval_split="validation"),
    **{name: _vtab(name, size) for name, size in _VTAB_IMAGE_SIZES.items()},
}

VTAB_1K = tuple(vtab.TASKS)


# The built-in generated data set (big_transfer.data.synthetic), whose facts its code knows.
BUILT_IN = "bit_synthetic"


def find(dataset: str, tfds_names: tuple[str, ...] = ()) -> DatasetFacts | None:
  """The table's facts of `dataset` (a config's `dataset`, e.g. "cifar10" or "cifar10:3.*"), of
  the built-in set ("bit_synthetic/upstream"), or of the standard set a TFDS builder of one of
  `tfds_names` reads; None for other data."""
  name = dataset.split(":")[0]
  if name in KNOWN:
    return KNOWN[name]
  builder, _, config_name = name.partition("/")
  if builder == BUILT_IN:
    # synthetic defines a TFDS builder: TFDS is imported only for the built-in set.
    from big_transfer.data import synthetic  # noqa: PLC0415
    return synthetic.facts(config_name)
  for facts in KNOWN.values():
    if tfds_names and facts.tfds_name.split(":")[0] in tfds_names:
      return facts
  return None


def lookup(name: str) -> DatasetFacts:
  """Returns the facts for a data set of the table, or raises a ConfigError that suggests names."""
  facts = find(name)
  if facts:
    return facts
  hint = errors.did_you_mean(name, KNOWN)
  raise errors.ConfigError(f"Data set {name!r} is not in the table of known transfer sets.{hint} "
                           f"Known: {', '.join(sorted(KNOWN))}.")
