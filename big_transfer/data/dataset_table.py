"""Facts about the standard transfer data sets, known without the data present.

BiT-HyperRule needs two numbers per task: how many labelled training examples there are
(schedule length, MixUp) and how large the images are (resolution). This table holds them for
the data sets of the BiT paper and the 19 VTAB-1k tasks, so that a fine-tuning config resolves on
a machine that has not prepared the data yet. Image sizes are typical (height, width) in pixels;
for sets of varying size they are the usual size, which is all the HyperRule looks at (area below
or above 96x96).
"""

import dataclasses
import difflib

from big_transfer import errors


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
  """What the HyperRule and the model head need to know about a data set.

  Attributes:
    tfds_name: TFDS name (with config) the data is read from.
    train_examples: number of labelled training examples of the transfer split.
    image_size: typical (height, width) in pixels.
    num_classes: number of labels.
    train_split: TFDS split that holds the training examples.
    eval_split: TFDS split used for evaluation.
  """
  tfds_name: str
  train_examples: int
  image_size: tuple[int, int]
  num_classes: int
  train_split: str = "train"
  eval_split: str = "test"


def _vtab(tfds_name, image_size, num_classes):
  # VTAB-1k fine-tunes on 1000 labelled examples (800 train + 200 validation) of each task.
  return DatasetFacts(tfds_name, 1000, image_size, num_classes, train_split="train[:1000]")


KNOWN: dict[str, DatasetFacts] = {
    # The released fine-tuning code keeps the last 2% of CIFAR's and 1% of ImageNet's training
    # images out as a minival, so the transfer split is the rest.
    "cifar10": DatasetFacts("cifar10", 49_000, (32, 32), 10, train_split="train[:98%]"),
    "cifar100": DatasetFacts("cifar100", 49_000, (32, 32), 100, train_split="train[:98%]"),
    "oxford_iiit_pet": DatasetFacts("oxford_iiit_pet", 3_680, (375, 500), 37),
    "oxford_flowers102": DatasetFacts("oxford_flowers102", 1_020, (500, 625), 102),
    "imagenet2012": DatasetFacts("imagenet2012", 1_268_355, (375, 500), 1000,
                                 train_split="train[:99%]", eval_split="validation"),
    # VTAB-1k, natural.
    "vtab/caltech101": _vtab("caltech101:3.*.*", (200, 300), 102),
    "vtab/cifar100": _vtab("cifar100", (32, 32), 100),
    "vtab/dtd": _vtab("dtd", (480, 640), 47),
    "vtab/oxford_flowers102": _vtab("oxford_flowers102", (500, 625), 102),
    "vtab/oxford_iiit_pet": _vtab("oxford_iiit_pet", (375, 500), 37),
    "vtab/sun397": _vtab("sun397/tfds", (300, 400), 397),
    "vtab/svhn": _vtab("svhn_cropped", (32, 32), 10),
    # VTAB-1k, specialized.
    "vtab/patch_camelyon": _vtab("patch_camelyon", (96, 96), 2),
    "vtab/eurosat": _vtab("eurosat/rgb", (64, 64), 10),
    "vtab/resisc45": _vtab("resisc45", (256, 256), 45),
    "vtab/diabetic_retinopathy": _vtab("diabetic_retinopathy_detection/btgraham-300",
                                       (300, 300), 5),
    # VTAB-1k, structured.
    "vtab/clevr_count": _vtab("clevr", (320, 480), 8),
    "vtab/clevr_distance": _vtab("clevr", (320, 480), 6),
    "vtab/dmlab": _vtab("dmlab", (360, 480), 6),
    "vtab/kitti_distance": _vtab("kitti", (375, 1242), 4),
    "vtab/dsprites_location": _vtab("dsprites", (64, 64), 16),
    "vtab/dsprites_orientation": _vtab("dsprites", (64, 64), 16),
    "vtab/smallnorb_azimuth": _vtab("smallnorb", (96, 96), 18),
    "vtab/smallnorb_elevation": _vtab("smallnorb", (96, 96), 9),
}

VTAB_1K = tuple(name for name in KNOWN if name.startswith("vtab/"))


def lookup(name: str) -> DatasetFacts:
  """Returns the facts for a data set of the table, or raises a ValueError that suggests names."""
  if name in KNOWN:
    return KNOWN[name]
  close = difflib.get_close_matches(name, KNOWN, n=3)
  hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
  raise errors.ConfigError(f"Data set {name!r} is not in the table of known transfer sets.{hint} "
                           f"Known: {', '.join(sorted(KNOWN))}.")
