"""What produced a checkpoint: the run record saved beside every checkpoint.

Training writes it, resuming checks it (a workdir must not mix two experiments), and an export
describes the model with it. It is plain JSON in the checkpoint, so any tool can read it.
"""

import dataclasses
import json

import ml_collections

from big_transfer import errors
from big_transfer.training import optim

# The fields that decide the structure of the saved state (its tree and the shapes and dtypes of
# its arrays): a checkpoint that differs in one cannot be restored into this run's state.
STRUCTURE = ("model", "num_classes", "state_dtypes", "optimizer")
# The fields that must match to resume a workdir: a different value means the checkpoints belong
# to another experiment. Compared before any restore, so a mismatch never looks like damage.
IDENTITY = STRUCTURE + ("dataset", "seed", "batch_size", "loss", "teacher_sha256")
# Fields that records written before them lack; such a record is compared on the others, and the
# saved state's layout (`checkpoints.Checkpoints.restore`) stands in for them.
_ADDED_LATER = ("state_dtypes", "optimizer", "teacher", "teacher_sha256")


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
    state_dtypes: the dtypes of the train state's parameters, e.g. "float32".
    optimizer: the optimizer's stages (`optim.layout_from_config`), e.g. "add_decayed_weights -> trace".
    teacher: a distillation run's teacher paths as given, or None for a run on labels.
    teacher_sha256: hash of the teachers' weights (`distill.weights_sha256`); "" for a run on
      labels, so that resuming it with a teacher (or the reverse) is refused. Resuming compares
      the weights, not the paths: a teacher copied elsewhere still resumes.
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
  state_dtypes: str | None
  optimizer: str | None
  teacher: tuple[str, ...] | None
  teacher_sha256: str | None

  @classmethod
  def of_run(cls, config: ml_collections.ConfigDict, num_classes: int,
             class_names: tuple[str, ...] | None, state_dtypes: str,
             teacher: tuple[str, ...] | None = None, teacher_sha256: str = "") -> "RunRecord":
    """The record of a run of `config` on data with `num_classes` classes named `class_names`,
    whose parameters have `state_dtypes`, distilled from the teachers at `teacher` whose
    weights hash to `teacher_sha256` if given."""
    return cls(model=config.model, num_classes=num_classes,
               class_names=tuple(class_names) if class_names else None,
               dataset=config.dataset, seed=config.seed, batch_size=config.batch_size,
               loss=config.loss, resolution=config.data.crop, recipe=config.data.recipe,
               config=json.loads(config.to_json()), state_dtypes=state_dtypes,
               optimizer=optim.layout_from_config(config), teacher=teacher,
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
    missing = [name for name in fields if name not in record and name not in _ADDED_LATER]
    if missing:
      raise errors.CheckpointError(f"The record of {where} lacks {', '.join(missing)}: it was "
                                   "written by an older big_transfer. Export or resume it with "
                                   "the version that wrote it.")
    values = {name: record.get(name) for name in fields}
    for name in ("class_names", "teacher"):
      if values[name] is not None:
        values[name] = tuple(values[name])
    return cls(**values)

  def check_resumable_by(self, current: "RunRecord") -> None:
    """Raises RunMismatchError naming every identity field `current` changes (a field this
    record lacks, being older, is not compared)."""
    compared = [name for name in IDENTITY
                if name not in _ADDED_LATER or getattr(self, name) is not None]
    differing = [f"{name}: checkpoint has {getattr(self, name)!r}, config has "
                 f"{getattr(current, name)!r}" for name in compared
                 if getattr(self, name) != getattr(current, name)]
    if differing:
      raise mismatch(differing)


def mismatch(differences: list[str]) -> RunMismatchError:
  """The one error for a workdir whose checkpoints another run wrote, naming `differences`."""
  return RunMismatchError("The workdir holds checkpoints of a different run (" +
                          "; ".join(differences) + "). Use a new --workdir, or restore the "
                          "original settings.")
