"""`bit_synthetic`: a built-in, generated TFDS data set for demos and tests.

Every image shows one object on a noisy background. A class is a combination of three visual
primitives: shape (5) x colour (5) x texture (4) = 100 combinations. The `downstream` config uses
10 of them, the `upstream` config the other 90, so the two share every primitive but no class:
features learned upstream (what a disk, red, or stripes look like) are exactly what a few-shot
downstream classifier needs. Position, size, brightness and the background are nuisances drawn per
image.

Nothing is downloaded. Each example is a pure function of (config, split, index) through a seeded
NumPy generator, so the data set is identical wherever it is prepared. The upstream config
(8,100 images of 64x64) prepares in about 10 s on one core.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from big_transfer.data import dataset_table

IMAGE_SIZE = 64
SHAPES = ("disk", "square", "triangle", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "magenta": (200, 50, 200),
}
TEXTURES = ("solid", "hstripes", "vstripes", "checker")
# All shape x colour x texture combinations, in a fixed order; the downstream classes are a fixed
# seeded draw of ten of them and upstream gets the rest.
COMBINATIONS = tuple((s, c, t) for s in SHAPES for c in COLOURS for t in TEXTURES)
_DOWNSTREAM_IDS = frozenset(
    np.random.default_rng(2020).choice(len(COMBINATIONS), 10, replace=False).tolist())
_SPLITS = ("train", "test")


def class_combinations(config_name: str) -> tuple[tuple[str, str, str], ...]:
  """The (shape, colour, texture) of each class of a config, in label order."""
  downstream = config_name == "downstream"
  return tuple(combo for i, combo in enumerate(COMBINATIONS)
               if (i in _DOWNSTREAM_IDS) == downstream)


def class_name(combo: tuple[str, str, str]) -> str:
  shape, colour, texture = combo
  return f"{colour}_{texture}_{shape}"


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
  """Boolean (H, W) mask of `shape` given offsets (H, W) from its centre."""
  distance = np.hypot(dy, dx)
  if shape == "disk":
    return distance <= radius
  if shape == "ring":
    return (distance <= radius) & (distance >= 0.55 * radius)
  if shape == "square":
    return np.maximum(np.abs(dy), np.abs(dx)) <= 0.8 * radius
  if shape == "triangle":  # Apex up, base at 0.7 radius below the centre.
    return (dy <= 0.7 * radius) & (np.abs(dx) <= 0.6 * (dy + radius))
  if shape == "cross":
    arm = radius / 3
    return (((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
            | ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)))
  raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _texture(texture: str, yy: np.ndarray, xx: np.ndarray, phase: int) -> np.ndarray:
  """Boolean (H, W) pattern: True where the object shows its full colour."""
  if texture == "solid":
    return np.ones_like(yy, dtype=bool)
  if texture == "hstripes":
    return ((yy + phase) // 3) % 2 == 0
  if texture == "vstripes":
    return ((xx + phase) // 3) % 2 == 0
  if texture == "checker":
    return ((yy + phase) // 4 + (xx + phase) // 4) % 2 == 0
  raise ValueError(f"Unknown texture {texture!r}; expected one of {TEXTURES}.")


def render(combo: tuple[str, str, str], rng: np.random.Generator) -> np.ndarray:
  """Draws one uint8 (64, 64, 3) image of the class `combo` with random nuisances."""
  return render_with_mask(combo, rng)[0]


def render_with_mask(combo: tuple[str, str, str],
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """`render`'s image, uint8 (64, 64, 3), and its object's boolean (64, 64) mask, for dense
  tasks (segmentation); the same draws from `rng`, so the image is `render`'s."""
  shape, colour, texture = combo
  yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
  radius = rng.uniform(10, 20)
  cy, cx = rng.uniform(radius + 1, IMAGE_SIZE - radius - 1, size=2)
  mask = _shape_mask(shape, yy - cy, xx - cx, radius)
  lit = _texture(texture, yy, xx, int(rng.integers(6)))
  rgb = np.asarray(COLOURS[colour], np.float32) * rng.uniform(0.8, 1.1)
  background = rng.uniform(0, 120, size=3).astype(np.float32)
  image = np.broadcast_to(background, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
  image[mask & lit] = rgb
  image[mask & ~lit] = 0.3 * rgb
  image += rng.normal(0, 12, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8), mask


@dataclasses.dataclass
class BitSyntheticConfig(tfds.core.BuilderConfig):
  """Sizes of one config: images per class in each split."""
  train_per_class: int = 0
  test_per_class: int = 0


def facts(config_name: str) -> dataset_table.DatasetFacts | None:
  """The facts of config `config_name` ("upstream", "downstream"), known from the code alone:
  nothing is prepared. None for a name that is not a config."""
  config = next((c for c in BitSynthetic.BUILDER_CONFIGS if c.name == config_name), None)
  if config is None:
    return None
  classes = len(class_combinations(config_name))
  return dataset_table.DatasetFacts(
      f"{BitSynthetic.name}/{config_name}",
      {"train": config.train_per_class * classes, "test": config.test_per_class * classes},
      (IMAGE_SIZE, IMAGE_SIZE), classes)


class BitSynthetic(tfds.core.GeneratorBasedBuilder):
  """Generated shape x colour x texture images; `upstream` and `downstream` share primitives."""

  # TFDS 4.9 finds a builder's code path through the `importlib_resources` backport, which is not
  # installed on Python >= 3.9; the builder's own file is the answer it would compute.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [
      BitSyntheticConfig(name="upstream", train_per_class=80, test_per_class=10,
                         description="90 classes for pre-training."),
      BitSyntheticConfig(name="downstream", train_per_class=100, test_per_class=50,
                         description="10 other classes of the same primitives, for transfer."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    names = [class_name(c) for c in class_combinations(self.builder_config.name)]
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                         encoding_format="png"),
            "label": tfds.features.ClassLabel(names=names),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    per_class = {"train": config.train_per_class, "test": config.test_per_class}
    return {split: self._generate_examples(split, per_class[split]) for split in _SPLITS}

  def _generate_examples(self, split: str, per_class: int):
    combos = class_combinations(self.builder_config.name)
    config_id = [c.name for c in self.BUILDER_CONFIGS].index(self.builder_config.name)
    for index in range(per_class * len(combos)):
      label = index % len(combos)
      rng = np.random.default_rng([config_id, _SPLITS.index(split), index])
      yield index, {"image": render(combos[label], rng), "label": label}
