"""Checkpoints of the train state with orbax: asynchronous, atomic, resumable, elastic.

Each checkpoint holds the whole `TrainState` (params, optimizer state, step, NaN marker) and a
small JSON record of what produced it (model, data, seed). The data stream is a pure function
of (seed, step), so the step is also the data position. orbax writes each checkpoint under a
temporary name and renames it when complete, so a crash mid-save never leaves a checkpoint that
looks complete, and it deletes old checkpoints only after a newer one is complete.
"""

import contextlib
import gc
import inspect
import logging
import sys
import time
import traceback

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from big_transfer import errors
from big_transfer.models import interop
from big_transfer.training import run_record

# Where a run's checkpoints live, under its workdir.
SUBDIR = "checkpoints"
# orbax's module that reads the arrays of a checkpoint (`async_deserialize` and its reads).
_READS_MODULE = "/orbax/checkpoint/_src/serialization/"


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
      every_steps: save when step % every_steps == 0 (and whenever forced); >= 1, as
        `recipes.schema.check` checks a run's checkpoint_every_steps.
      keep: number of most recent checkpoints to keep.
      keep_every: also keep every checkpoint whose step is a multiple of this.
      read_only: open existing checkpoints without creating or deleting anything (export).
    """
    self.directory = epath.Path(workdir) / SUBDIR
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_every,
        create=not read_only, read_only=read_only, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "record"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def check_step(self, step: int) -> None:
    """Raises a CheckpointError naming the available steps unless there is one at `step`."""
    available = self.all_steps()
    if step not in available:
      raise errors.CheckpointError(f"No checkpoint at step {step} in {self.directory}; available "
                                   f"steps: {', '.join(map(str, available)) or 'none'}.")

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

  def restore(self, abstract_state, step: int | None = None,
              expected: run_record.RunRecord | None = None):
    """Restores the state with the shardings of `abstract_state` (a tree of ShapeDtypeStructs).

    The target shardings decide the layout, so a checkpoint written on one topology restores
    on another. Before any array is read, the checkpoint's run record is compared with
    `expected` and its saved tree, shapes and dtypes with `abstract_state`: a checkpoint of
    another run raises `run_record.RunMismatchError` and is left untouched. With `step=None`
    the latest readable checkpoint is used: one that fails to read although it matches is
    damaged; it is named in a warning, set aside, and the one before it is tried.

    Returns:
      (state, record, step), or None when there is no checkpoint.
    """
    if step is not None:
      self.check_step(step)
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    for candidate in steps:
      where = self.directory / str(candidate)
      try:
        saved_record = self._manager.restore(candidate, args=ocp.args.Composite(
            record=ocp.args.JsonRestore()))["record"]
        saved_layout = self.saved_layout(candidate)
      except Exception as e:  # orbax/tensorstore raise many types for damaged files.
        self._damaged(candidate, _one_line(e), fatal=step is not None)
        continue
      record = run_record.RunRecord.from_json(saved_record, f"checkpoint {where}")
      if expected is not None:
        record.check_resumable_by(expected)
      _check_layout(saved_layout, abstract_state)
      failure = None
      with _abandoned_reads_dropped():
        try:
          restored = self._manager.restore(candidate, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state)))
        except Exception as e:  # The layout matches: what fails now is the files.
          failure = _one_line(e)  # Not `e`: its traceback would keep the abandoned reads alive.
      if failure is not None:
        self._damaged(candidate, failure, fatal=step is not None)
        continue
      return restored["state"], record, candidate
    if steps:
      raise errors.CheckpointError(f"None of the checkpoints in {self.directory} ({steps}) can "
                                   "be read.")
    return None

  def saved_layout(self, step: int):
    """The saved state's tree of array metadata (shape, dtype) at `step`, read without arrays.

    The handler itself, not a `Checkpointer`: that one looks for metadata of a whole checkpoint
    in the item's folder, warns for each, and returns None for damaged metadata instead of
    raising."""
    layout = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
    if not jax.tree.leaves(layout):
      raise ValueError(f"no array metadata in {self.directory / str(step) / 'state'}")
    return layout

  def _damaged(self, step: int, failure: str, fatal: bool) -> None:
    """Raises for a damaged checkpoint asked for by step (`fatal`), else warns and sets it
    aside; `failure` is `_one_line` of what failed."""
    if fatal:
      raise errors.CheckpointError(f"Checkpoint {self.directory / str(step)} cannot be read: "
                                   f"{failure}")
    logging.warning("Checkpoint %s is damaged or incomplete (%s); moving it aside and trying "
                    "the previous one.", self.directory / str(step), failure)
    self._set_aside(step)

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
      saved = self.saved_layout(step)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files.
      self._damaged(step, _one_line(e), fatal=True)
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), saved)
    state, _, _ = self.restore(abstract, step)
    return jax.device_get(state["params"])

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _one_line(error: Exception) -> str:
  """"Type: first line of the message" of a read failure (tensorstore's run to pages)."""
  message = str(error)
  return f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"


@contextlib.contextmanager
def _abandoned_reads_dropped():
  """Drops Python's "Exception ignored in: <coroutine ...>" reports of a failed restore (and
  asyncio's reports of its failed read tasks, through `_AbandonedReadReports`, and tensorstore's
  of their late callbacks, through `_drop_late_read_callbacks`).

  orbax reads the arrays in concurrent coroutines; when one read fails (a damaged file) the
  others are abandoned, and each prints a traceback when it is collected. The failure itself is
  reported once, by the caller. The abandoned reads are collected before the hook is put back.
  """
  asyncio_log = logging.getLogger("asyncio")
  if not any(isinstance(f, _AbandonedReadReports) for f in asyncio_log.filters):
    asyncio_log.addFilter(_AbandonedReadReports())
  _drop_late_read_callbacks()
  previous = sys.unraisablehook

  def hook(unraisable):
    if not inspect.iscoroutine(unraisable.object):
      previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


def _is_late_read_callback(unraisable) -> bool:
  """Whether an unraisable report is tensorstore's callback of an abandoned read that finished
  after orbax closed the event loop of the failed restore (`asyncio_utils.run_sync` closes it as
  soon as the first read fails): called from tensorstore's own thread, so no Python frame is
  above asyncio's `call_soon_threadsafe`, which finds the loop closed."""
  tb = unraisable.exc_traceback
  return (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed" and tb is not None
          and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")


def _drop_late_read_callbacks() -> None:
  """Puts a hook before `sys.unraisablehook`, once, that drops `_is_late_read_callback` reports.

  It stays: the abandoned reads finish on tensorstore's threads at any time after the restore
  (seconds later, in the middle of training), each report a 5-line traceback."""
  if getattr(sys.unraisablehook, "drops_late_read_callbacks", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_late_read_callback(unraisable):
      previous(unraisable)

  hook.drops_late_read_callbacks = True
  sys.unraisablehook = hook


class _AbandonedReadReports(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" reports of abandoned array reads (a
  read task's, or the gathering future's of several).

  The reads run on orbax's own event loop, whose tasks may be collected long after the restore
  failed; so this filter stays on the "asyncio" logger, and drops only the reports of exceptions
  raised by orbax's array reads."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "exception was never retrieved" not in str(record.msg) or not record.exc_info:
      return True
    tb = record.exc_info[2]
    return not any(_READS_MODULE in frame.f_code.co_filename
                   for frame, _ in traceback.walk_tb(tb))


def _check_layout(saved, abstract_state) -> None:
  """Raises RunMismatchError naming the arrays where the saved tree of array metadata `saved`
  and `abstract_state` differ in path, shape or dtype (a few, and how many more)."""
  saved, expected = _layout(saved), _layout(abstract_state)
  differences = []
  for path in sorted(saved.keys() | expected.keys()):
    if path not in expected:
      differences.append(f"{path}: only in the checkpoint")
    elif path not in saved:
      differences.append(f"{path}: only in this config's state")
    elif saved[path] != expected[path]:
      differences.append(f"{path}: checkpoint has {_describe(saved[path])}, config has "
                         f"{_describe(expected[path])}")
  if differences:
    shown = differences[:3] + ([f"{len(differences) - 3} more arrays"]
                               if len(differences) > 3 else [])
    raise run_record.mismatch(["its saved state differs from this config's: " + ", ".join(shown)])


def _layout(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """'params/head/kernel' -> (shape, dtype name) of each array of a state or its metadata."""
  def name(key) -> str:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        return str(getattr(key, attribute))
    return str(key)
  return {"/".join(name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _describe(layout: tuple[tuple[int, ...], str]) -> str:
  shape, dtype = layout
  return f"{dtype}{list(shape)}"


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
