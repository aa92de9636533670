"""What produced a checkpoint: the run record saved beside every checkpoint.

Training writes it, resuming checks it (a workdir must not mix two experiments), and an export
describes the model with it. It is plain JSON in the checkpoint, so any tool can read it.
"""

import dataclasses
import json

import ml_collections

from big_transfer import errors

# The fields that must match to resume a workdir: a different value means the checkpoints belong
# to another experiment.
IDENTITY = ("model", "num_classes", "dataset", "seed", "batch_size", "loss", "teacher_sha256")


class RunMismatchError(errors.CheckpointError):
  """The workdir holds checkpoints of a different experiment."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """The run that wrote a checkpoint.

  Attributes:
    model: model name, e.g. "BiT-M-R50x1".
    num_classes: size of the head.
    class_names: name of each class, or None when the data has none.
    dataset: the data set trained on (TFDS name, `vtab/NAME` or `folder:/path`).
    seed: the run's seed (with the step, it fixes the data stream).
    batch_size: global batch size.
    loss: "softmax_xent" or "sigmoid_xent".
    resolution: side of the square images the model was trained and evaluated on.
    recipe: the input recipe, "upstream" or "finetune"; it decides the eval preprocessing.
    config: the whole run config, JSON-ready.
    teacher: the distillation teachers' paths as given, or None for a run on labels.
    teacher_sha256: hash of the teachers' weights (`distill.weights_sha256`), or None. Resuming
      compares the weights, not the paths, so a teacher copied elsewhere still resumes.
  """
  model: str
  num_classes: int
  class_names: tuple[str, ...] | None
  dataset: str
  seed: int
  batch_size: int
  loss: str
  resolution: int
  recipe: str
  config: dict
  teacher: tuple[str, ...] | None = None
  teacher_sha256: str | None = None

  @classmethod
  def of_run(cls, config: ml_collections.ConfigDict, num_classes: int,
             class_names: tuple[str, ...] | None, teacher: tuple[str, ...] | None = None,
             teacher_sha256: str | None = None) -> "RunRecord":
    """The record of a run of `config` on data with `num_classes` classes named `class_names`,
    distilled from the weights hashed `teacher_sha256` at the paths `teacher` if given."""
    return cls(model=config.model, num_classes=num_classes,
               class_names=tuple(class_names) if class_names else None,
               dataset=config.dataset, seed=config.seed, batch_size=config.batch_size,
               loss=config.loss, resolution=config.data.crop, recipe=config.data.recipe,
               config=json.loads(config.to_json()), teacher=teacher,
               teacher_sha256=teacher_sha256)

  def to_json(self) -> dict:
    record = dataclasses.asdict(self)
    record["class_names"] = list(self.class_names) if self.class_names else None
    record["teacher"] = list(self.teacher) if self.teacher else None
    return record

  @classmethod
  def from_json(cls, record: dict, where: str) -> "RunRecord":
    """Reads a record saved by `to_json`; `where` names the checkpoint in errors."""
    fields = [field.name for field in dataclasses.fields(cls)]
    # Fields with a default came later; records written before them read as their default.
    required = [field.name for field in dataclasses.fields(cls)
                if field.default is dataclasses.MISSING]
    missing = [name for name in required if name not in record]
    if missing:
      raise errors.CheckpointError(f"The record of {where} lacks {', '.join(missing)}: it was "
                                   "written by an older big_transfer. Export or resume it with "
                                   "the version that wrote it.")
    values = {name: record[name] for name in fields if name in record}
    for name in ("class_names", "teacher"):
      if values.get(name) is not None:
        values[name] = tuple(values[name])
    return cls(**values)

  def check_resumable_by(self, current: "RunRecord") -> None:
    """Raises RunMismatchError naming every identity field `current` changes."""
    differing = [f"{name}: checkpoint has {getattr(self, name)!r}, config has "
                 f"{getattr(current, name)!r}" for name in IDENTITY
                 if getattr(self, name) != getattr(current, name)]
    if differing:
      raise RunMismatchError(
          "The workdir holds checkpoints of a different run (" + "; ".join(differing) +
          "). Use a new --workdir, or restore the original settings.")
