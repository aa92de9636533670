"""What the input pipeline is asked for (`InputConfig`) and what it reports (`DatasetInfo`)."""

import dataclasses
import typing

import ml_collections

from big_transfer import atomic, errors

RECIPES = ("upstream", "finetune")
FOLDER_PREFIX = "folder:"
# A softmax over one class has loss 0 and accuracy 1 whatever the weights: nothing to learn.
MIN_CLASSES = 2


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """What to read and how: `config.dataset` and the `data` section of a run config.

  Build it from a run config with `InputConfig.from_config(config)`; the defaults below are the
  run config's defaults too (`config_section`).

  Attributes:
    dataset: a TFDS name `name[/config][:version]`, a VTAB-1k task `vtab/NAME`, or
      `folder:/path/to/images`.
    data_dir: TFDS data_dir, local or gs://; None for the TFDS default.
    train_split: training split, with TFDS slicing, e.g. "train[:98%]"; a VTAB-1k task's split
      names are "train800val200", "train800", "val200", "test" (and "train", "val", "trainval").
    eval_split: evaluation split, same syntax.
    recipe: "upstream" (inception crop to `crop`, flip) or "finetune" (resize to a `precrop`
      square, random `crop` crop, flip).
    precrop: side of the square the finetune recipe crops from.
    crop: side of the training crop; evaluation resizes to crop x crop.
    mixup_alpha: MixUp strength; 0 turns it off.
    multilabel: multi-hot targets (from a "labels" sequence feature if there is one).
    examples_per_class: few-shot: use only this many examples per class of the train split.
    fewshot_seed: seed of the few-shot draw.
    shuffle_buffer: examples in the shuffle buffer of data streamed from TFDS.
  """
  dataset: str = "bit_synthetic/upstream"
  data_dir: str | None = None
  train_split: str = "train"
  eval_split: str = "test"
  recipe: str = "upstream"
  precrop: int = 256
  crop: int = 224
  mixup_alpha: float = 0.0
  multilabel: bool = False
  examples_per_class: int | None = None
  fewshot_seed: int = 0
  shuffle_buffer: int = 10_000

  def __post_init__(self):
    atomic.check_scheme(self.data_dir, "--config.data.data_dir")
    if self.is_folder:
      atomic.check_scheme(self.dataset[len(FOLDER_PREFIX):], "--config.dataset", self.dataset)
    if self.recipe not in RECIPES:
      raise errors.ConfigError(f"recipe must be one of {RECIPES}, got {self.recipe!r}.")
    if self.crop < 1:
      raise errors.ConfigError(f"crop must be a positive number of pixels, got {self.crop}.")
    if self.recipe == "finetune" and self.precrop < self.crop:
      raise errors.ConfigError(f"The finetune recipe cuts a crop={self.crop} square out of a "
                               f"precrop={self.precrop} square; set precrop >= crop.")
    if self.mixup_alpha < 0:
      raise errors.ConfigError("mixup_alpha must be >= 0 (0 turns MixUp off), got "
                               f"{self.mixup_alpha}.")
    if self.examples_per_class is not None and self.examples_per_class < 1:
      raise errors.ConfigError("examples_per_class must be >= 1 or None, got "
                               f"{self.examples_per_class}.")
    if self.shuffle_buffer < 1:
      raise errors.ConfigError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "InputConfig":
    """The input config of a run config: its `dataset` and every key of its `data` section."""
    return cls(dataset=config.dataset, **config.data.to_dict())

  @property
  def is_folder(self) -> bool:
    return self.dataset.startswith(FOLDER_PREFIX)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Facts about the configured data that the HyperRule and the model head need.

  Attributes:
    num_train_examples: training examples after split slicing and the few-shot draw.
    image_size: typical (height, width) of the source images in pixels.
    num_classes: number of labels (the width of the target vectors).
    class_names: name of each label, or None when the data has none.
    skipped_images: unreadable images left out of a folder's train and eval splits.
  """
  num_train_examples: int
  image_size: tuple[int, int]
  num_classes: int
  class_names: tuple[str, ...] | None
  skipped_images: int = 0


def config_section() -> ml_collections.ConfigDict:
  """The `data` section of a run config: every field of `InputConfig` but `dataset`, with its
  default. Fields whose default is None get a typed placeholder, so `--config.data.KEY=V` works."""
  section = ml_collections.ConfigDict()
  hints = typing.get_type_hints(InputConfig)
  for field in dataclasses.fields(InputConfig):
    if field.name == "dataset":
      continue
    if field.default is None:
      field_type = next(t for t in typing.get_args(hints[field.name]) if t is not type(None))
      section[field.name] = ml_collections.FieldReference(None, field_type=field_type)
    else:
      section[field.name] = field.default
  return section
