"""BiT-HyperRule: the fixed rule that sets the few transfer hyper-parameters that matter.

Instead of a per-task search, BiT picks resolution, schedule length and MixUp from two facts of
the downstream task: its image size and its number of labelled training examples. The schedule
table is the released code's (warm-up 100 steps for small tasks); the paper's text rounds it.
"""

import dataclasses

from big_transfer import errors
from big_transfer.training import optim

# Below this many pixels of image area (a square of this side) a task counts as low resolution.
_SMALL_IMAGE_SIDE = 96
_SMALL_IMAGE_AREA = _SMALL_IMAGE_SIDE * _SMALL_IMAGE_SIDE
# Task sizes (labelled training examples) that separate small, medium and large tasks.
_MEDIUM_TASK = 20_000
_LARGE_TASK = 500_000

# The learning rate for a global batch of BASE_BATCH_SIZE; other batches scale it linearly.
BASE_LR = 0.003
BASE_BATCH_SIZE = 512
MOMENTUM = 0.9
MIXUP_ALPHA = 0.1


@dataclasses.dataclass(frozen=True)
class StepCounts:
  """Step counts of a fine-tuning run at the HyperRule's batch of 512: linear warm-up, then
  x0.1 after each decay step. A run with another batch keeps the examples seen (the recipe in
  configs/hyperrule.py scales the steps by 512 / batch) and the decay fractions."""
  warmup_steps: int
  decay_steps: tuple[int, ...]
  total_steps: int

  @property
  def decay_fractions(self) -> tuple[float, ...]:
    """Where the decays fall, as fractions of the run (what `optim.Schedule` resolves)."""
    return tuple(step / self.total_steps for step in self.decay_steps)


def _check_positive(name: str, value) -> None:
  if value <= 0:
    raise errors.ConfigError(f"{name} must be positive, got {value!r}.")


def _is_low_resolution(image_size: tuple[int, int]) -> bool:
  height, width = image_size
  return height * width < _SMALL_IMAGE_AREA


def _task_size(dataset_size: int) -> str:
  """"small", "medium" or "large": what the schedule and MixUp follow."""
  if dataset_size < _MEDIUM_TASK:
    return "small"
  return "medium" if dataset_size < _LARGE_TASK else "large"


# The released schedules by task size.
_SCHEDULES = {
    "small": StepCounts(warmup_steps=100, decay_steps=(200, 300, 400), total_steps=500),
    "medium": StepCounts(warmup_steps=500, decay_steps=(3000, 6000, 9000), total_steps=10_000),
    "large": StepCounts(warmup_steps=500, decay_steps=(6000, 12_000, 18_000), total_steps=20_000),
}
# How `explain` states each task size.
_TASK_SIZE_RANGES = {
    "small": f"below {_MEDIUM_TASK}",
    "medium": f"from {_MEDIUM_TASK} to below {_LARGE_TASK}",
    "large": f"at least {_LARGE_TASK}",
}


def resolution(image_size: tuple[int, int], released: bool = False) -> tuple[int, int]:
  """Returns (precrop, crop): resize to precrop x precrop, then take a crop x crop crop.

  Args:
    image_size: typical (height, width) of the task's images in pixels.
    released: use the released code's (512, 480) for large images instead of the paper's
      (448, 384).
  """
  height, width = image_size
  _check_positive("image height", height)
  _check_positive("image width", width)
  if _is_low_resolution(image_size):
    return (160, 128)
  return (512, 480) if released else (448, 384)


def schedule(dataset_size: int) -> StepCounts:
  """Returns the released HyperRule schedule for a task of `dataset_size` labelled examples."""
  _check_positive("dataset_size", dataset_size)
  return _SCHEDULES[_task_size(dataset_size)]


def mixup_alpha(dataset_size: int) -> float:
  """MixUp strength: none for small tasks, 0.1 from 20k labelled examples on."""
  _check_positive("dataset_size", dataset_size)
  return 0.0 if _task_size(dataset_size) == "small" else MIXUP_ALPHA


def explain(image_size: tuple[int, int], dataset_size: int,
            released: bool = False) -> dict[str, str]:
  """Each decision of the rule for a task, with the facts and thresholds that made it.

  Returns:
    {"resolution", "schedule", "mixup"}: one sentence each, for a run's log and summary.
  """
  height, width = image_size
  precrop, crop = resolution(image_size, released)
  area = "below" if _is_low_resolution(image_size) else "at least"
  sched = schedule(dataset_size)
  size_class = f"{dataset_size} examples, {_TASK_SIZE_RANGES[_task_size(dataset_size)]}"
  alpha = mixup_alpha(dataset_size)
  side = _SMALL_IMAGE_SIDE
  return {
      "resolution": (f"{height}x{width} px images, {area} {side}x{side} px in area: resize to "
                     f"{precrop}, random crop {crop}"
                     + (" (released code's size)" if released else "")),
      "schedule": (f"{size_class}: {sched.total_steps} steps at batch {BASE_BATCH_SIZE}, warm-up "
                   f"{sched.warmup_steps}, x{optim.DECAY_FACTOR:g} after steps "
                   f"{', '.join(str(s) for s in sched.decay_steps)}"),
      "mixup": f"{size_class}: " + (f"MixUp alpha {alpha}" if alpha else "no MixUp"),
  }
