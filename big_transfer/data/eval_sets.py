"""The evaluation sets by name: which data each evaluator of `big_transfer.training.evaluators`
reads, and which ImageNet-1k classes its images can show.

    imagenet2012            ILSVRC-2012 validation (50,000 images)
    imagenet2012_minival    train[99%:], the 1% of the training split held out as a minival
    imagenet2012_real       validation with the ReaL label sets (`real_label`; empty sets excluded)
    imagenet_v2[:CONFIG]    ImageNet-v2, config matched-frequency (default), threshold-0.7 or
                            topimages
    imagenet_a, imagenet_r  200-class sets (their classes: big_transfer/data/labels/)
    imagenet_sketch         50,889 sketches of the 1000 classes
    objectnet:DIR           the user's unpacked ObjectNet 1.0 folder (big_transfer.data.objectnet)

Every set is labelled in ImageNet-1k's label order. TensorFlow-free: configs parse these names.
"""

import dataclasses

from big_transfer import errors

OBJECTNET = "objectnet"
IMAGENET_V2_CONFIGS = ("matched-frequency", "threshold-0.7", "topimages")


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """The data of one evaluator.

  Attributes:
    name: what names the results: as the user wrote it ("imagenet_v2:topimages"), but
      "objectnet" without its folder.
    dataset: the TFDS name, or "objectnet".
    split: the TFDS split read.
    label_key: the feature holding the labels (None: the data set's "label").
    subset: the key of `class_lists.SUBSETS` naming the classes the set shows, or None.
    folder: ObjectNet's folder.
  """
  name: str
  dataset: str
  split: str
  label_key: str | None = None
  subset: str | None = None
  folder: str | None = None


_PLAIN = {
    "imagenet2012": ("imagenet2012", "validation", None, None),
    "imagenet2012_minival": ("imagenet2012", "train[99%:]", None, None),
    "imagenet2012_real": ("imagenet2012_real", "validation", "real_label", None),
    "imagenet_a": ("imagenet_a", "test", None, "imagenet_a"),
    "imagenet_r": ("imagenet_r", "test", None, "imagenet_r"),
    "imagenet_sketch": ("imagenet_sketch", "test", None, None),
}
NAMES = (*_PLAIN, "imagenet_v2", f"{OBJECTNET}:DIR")


def parse(name: str) -> EvalSet:
  """The evaluation set `name` (see the module's list); a ConfigError names the known ones."""
  base, _, arg = name.partition(":")
  if base in _PLAIN and not arg:
    return EvalSet(name, *_PLAIN[base])
  if base == "imagenet_v2":
    config = arg or IMAGENET_V2_CONFIGS[0]
    if config not in IMAGENET_V2_CONFIGS:
      raise errors.ConfigError(f"imagenet_v2 has no config {config!r} (evaluator {name!r}); "
                               f"choose one of {', '.join(IMAGENET_V2_CONFIGS)}.")
    return EvalSet(name, f"imagenet_v2/{config}", "test")
  if base == OBJECTNET:
    if not arg:
      raise errors.ConfigError("The objectnet evaluator reads your unpacked ObjectNet 1.0 "
                               "folder: name it as objectnet:DIR (DIR holds images/ and "
                               "mappings/).")
    return EvalSet(OBJECTNET, OBJECTNET, "images", folder=arg)
  raise errors.ConfigError(f"Unknown evaluator {name!r}.{errors.did_you_mean(base, NAMES)} "
                           f"Evaluators: {', '.join(NAMES)}.")
