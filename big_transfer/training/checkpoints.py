"""Checkpoints of the train state with orbax: asynchronous, atomic, resumable, elastic.

Each checkpoint holds the whole `TrainState` (params, optimizer state, step, NaN marker) and a
small JSON record of what produced it (model, data, seed). The data stream is a pure function
of (seed, step), so the step is also the data position. orbax writes each checkpoint under a
temporary name and renames it when complete, so a crash mid-save never leaves a checkpoint that
looks complete, and it deletes old checkpoints only after a newer one is complete.
"""

import logging
import time

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from etils import epath

from big_transfer import errors

from big_transfer.models import interop

from big_transfer.training import run_record

# Where a run's checkpoints live, under its workdir.
SUBDIR = "checkpoints"


def saved_steps(workdir) -> list[int]:
  """The steps of the complete checkpoints in `workdir`, ascending, read from the file system
  alone: no checkpoint manager, no JAX backend (a sweep looks at its members with it)."""
  return sorted(ocp.utils.checkpoint_steps(epath.Path(workdir) / SUBDIR))


class Checkpoints:
  """The checkpoints of one workdir (local or gs://)."""

  def __init__(self, workdir, every_steps: int, keep: int = 3, keep_every: int | None = None,
               read_only: bool = False):
    """Args:
      workdir: the run's directory; checkpoints go to `workdir/checkpoints`.
      every_steps: save when step % every_steps == 0 (and whenever forced).
      keep: number of most recent checkpoints to keep.
      keep_every: also keep every checkpoint whose step is a multiple of this.
      read_only: open existing checkpoints without creating or deleting anything (export).
    """
    if every_steps < 1:
      raise errors.ConfigError(f"checkpoint_every_steps must be >= 1, got {every_steps}.")
    self.directory = epath.Path(workdir) / SUBDIR
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_every,
        create=not read_only, read_only=read_only, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "record"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, record: run_record.RunRecord, force: bool = False) -> bool:
    """Starts an asynchronous save of `state` at `step`; returns whether a save started."""
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record.to_json())),
        force=force)

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a preemption notice (SIGTERM) arrived; all agree on `step`."""
    return self._manager.reached_preemption(step)

  def read_record(self, step: int) -> run_record.RunRecord:
    saved = self._manager.restore(step, args=ocp.args.Composite(
        record=ocp.args.JsonRestore()))["record"]
    return run_record.RunRecord.from_json(saved, f"checkpoint {self.directory / str(step)}")

  def restore(self, abstract_state, step: int | None = None):
    """Restores the state with the shardings of `abstract_state` (a tree of ShapeDtypeStructs).

    The target shardings decide the layout, so a checkpoint written on one topology restores
    on another. With `step=None` the latest readable checkpoint is used: a damaged one is
    named in a warning and the one before it is tried.

    Returns:
      (state, record, step), or None when there is no checkpoint.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    if step is not None and step not in self.all_steps():
      raise errors.CheckpointError(f"No checkpoint at step {step} in {self.directory}; available "
                                   f"steps: {self.all_steps() or 'none'}.")
    for candidate in steps:
      try:
        restored = self._manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files.
        if step is not None:
          raise errors.CheckpointError(f"Checkpoint {self.directory / str(candidate)} cannot be "
                                       f"read: {type(e).__name__}: {e}") from None
        logging.warning("Checkpoint %s is damaged or incomplete (%s: %s); moving it aside and "
                        "trying the previous one.", self.directory / str(candidate),
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        self._set_aside(candidate)
        continue
      record = run_record.RunRecord.from_json(
          restored["record"], f"checkpoint {self.directory / str(candidate)}")
      return restored["state"], record, candidate
    if steps:
      raise errors.CheckpointError(f"None of the checkpoints in {self.directory} ({steps}) can "
                                   "be read.")
    return None

  def _set_aside(self, step: int) -> None:
    """Renames a damaged checkpoint to `<step>.damaged-<time>`, kept for inspection.

    Left in place, it would count as the latest step and orbax would skip every save up to it.
    """
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(self.directory / f"{step}.damaged-{time.time():.0f}")
    multihost_utils.sync_global_devices(f"set aside damaged checkpoint {step}")
    self._manager.reload()

  def restore_params(self, step: int | None = None) -> dict:
    """The params of a checkpoint as NumPy arrays (latest step by default).

    Restores onto this process's CPU with the saved shapes, so it works on any machine, whatever
    devices wrote the checkpoint (a pod's run exported on a workstation).
    """
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise errors.CheckpointError(f"No checkpoint in {self.directory}.")
    try:
      with ocp.StandardCheckpointer() as reader:
        saved = reader.metadata(self.directory / str(step) / "state").item_metadata
    except Exception as e:  # orbax/tensorstore raise many types for damaged files.
      raise errors.CheckpointError(f"Checkpoint {self.directory / str(step)} cannot be read: "
                                   f"{type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}") from None
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), saved)
    state, _, _ = self.restore(abstract, step)
    return jax.device_get(state["params"])

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs of `state` carrying `shardings`, the target of a restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def load_params(path) -> dict:
  """Pretrained parameters as host arrays: a published-layout `.npz`, or a run's workdir.

  For a workdir the latest readable checkpoint is used, whatever topology wrote it.
  """
  path = epath.Path(path)
  if path.suffix == ".npz":
    return interop.load_bit_npz(path)
  if not (path / SUBDIR).exists():
    raise errors.CheckpointError(f"{path} is neither a .npz file nor a workdir with checkpoints; "
                                 "pass a published BiT .npz or the --workdir of an earlier run.")
  return Checkpoints(path, every_steps=1, read_only=True).restore_params()
