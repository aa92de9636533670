"""One job per workdir: a hold file that stops a second job on a held workdir at once.

Schedulers restart jobs and people relaunch them; two jobs training into one workdir would
overwrite each other's checkpoints. Process 0 of a job claims `WORKDIR/HOLD`, a small JSON file
naming the holder (host, process id, scheduler job and attempt, start time, heartbeat time and a
random token), refreshes its heartbeat from a background thread, and deletes it when the run ends
(completed, failed, saved and stopped after SIGTERM, or stopped by a lost peer of its job). Every process of a multi-process job
learns process 0's outcome, so all processes of a refused job stop before touching the workdir.

A hold whose holder is gone is taken over with a warning. The holder is gone when
  - its heartbeat is older than `stale_after_s` (it died and nothing cleaned up),
  - it ran on this host and its process no longer exists (a rerun after a crash or SIGKILL), or
  - it is an earlier attempt of this same scheduler job (a SLURM requeue, a JobSet restart: both
    end every process of the earlier attempt before they start the next).

Two jobs starting at once cannot both win. On a local filesystem the hold is created with a hard
link, which fails when the file exists: an atomic exclusive create of a complete file. Object
stores (gs://) have no exclusive create through epath, so there the claim is written, left
`SETTLE_S` seconds for a competitor's write to land, and read back: the job whose token is read
back holds the workdir and the other stops. A takeover is settled the same way everywhere.
Heartbeats compare the clocks of different hosts; they are assumed to agree to well under
`stale_after_s` (NTP keeps a cluster's clocks within milliseconds).
"""

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import secrets
import socket
import threading
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from big_transfer import atomic, errors
from big_transfer.launch import distributed

HOLD_NAME = "HOLD"
# Seconds a claim written without an exclusive create is left before it is read back.
SETTLE_S = 2.0
# The heartbeat is refreshed this many times per stale period, so a holder is judged gone only
# after that many refreshes in a row failed to land.
HEARTBEATS_PER_STALE_PERIOD = 10


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a workdir: the content of its HOLD file."""
  host: str
  pid: int
  job: str | None   # the scheduler's job id ("slurm:1234", a JobSet uid); None outside one.
  attempt: int      # how many times the scheduler restarted that job before this run.
  started: float    # time.time() when the hold was claimed.
  heartbeat: float  # time.time() of the latest refresh.
  token: str        # random: tells this claim from every other.

  def describe(self) -> str:
    started = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
    job = f", job {self.job} attempt {self.attempt}" if self.job else ""
    return (f"process {self.pid} on host {self.host}{job}, started {started:%Y-%m-%d %H:%M:%S} "
            f"UTC, last heartbeat {max(time.time() - self.heartbeat, 0):.0f} s ago")


def this_job() -> tuple[str | None, int]:
  """(job id, attempt) of the scheduler job this process runs in; (None, 0) outside one.

  BIG_TRANSFER_JOB_ID and BIG_TRANSFER_JOB_ATTEMPT name it (the JobSet manifests of `tpu/launch`
  set them from the JobSet's uid and restart attempt); under SLURM the job id and
  SLURM_RESTART_COUNT, which each requeue raises, are used.
  """
  env = os.environ
  if env.get("BIG_TRANSFER_JOB_ID"):
    return env["BIG_TRANSFER_JOB_ID"], int(env.get("BIG_TRANSFER_JOB_ATTEMPT") or 0)
  if env.get("SLURM_JOB_ID"):
    return f"slurm:{env['SLURM_JOB_ID']}", int(env.get("SLURM_RESTART_COUNT") or 0)
  return None, 0


def read(workdir) -> Holder | None:
  """The holder of `workdir` (local or gs://), or None when nobody holds it."""
  path = epath.Path(workdir) / HOLD_NAME
  try:
    text = path.read_text()
  except FileNotFoundError:
    return None
  try:
    content = json.loads(text)
    return Holder(**{field.name: content[field.name] for field in dataclasses.fields(Holder)})
  except (ValueError, KeyError, TypeError) as e:
    raise errors.WorkdirHeldError(
        f"{path} cannot be read ({type(e).__name__}: {e}); it is not a hold this version wrote. "
        "If no job uses this workdir, delete the file and rerun.") from None


def _held_message(workdir, holder: Holder, stale_after_s: float) -> str:
  return (f"The workdir {workdir} is held by a running job: {holder.describe()}. Two jobs in one "
          "workdir would mix their checkpoints: wait for that job to end or stop it, or use "
          f"another --workdir. A hold whose heartbeat stops for {stale_after_s:.0f} s "
          "(--config.hold_stale_after_s) is taken over.")


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # It exists and belongs to another user.
    return True
  return True


def _gone_reason(holder: Holder, me: Holder, stale_after_s: float) -> str | None:
  """Why `holder` no longer runs, or None when it may still run."""
  age = time.time() - holder.heartbeat
  if age > stale_after_s:
    return f"its last heartbeat is {age:.0f} s old (stale after {stale_after_s:.0f} s)"
  # A holder with this very process id is an earlier container whose process-id namespace
  # this one reuses (a restarted pod on the same node): it cannot be this process.
  if holder.host == me.host and (holder.pid == me.pid or not _process_exists(holder.pid)):
    return f"process {holder.pid} no longer runs on this host"
  if holder.job is not None and holder.job == me.job and holder.attempt < me.attempt:
    return f"it is attempt {holder.attempt} of this job, which is now at attempt {me.attempt}"
  return None


def _is_local(path: epath.Path) -> bool:
  return "://" not in os.fspath(path)


def _write(path: epath.Path, holder: Holder) -> None:
  """Writes the hold atomically: a reader sees the previous holder or this one, never a part."""
  atomic.write_json(path, dataclasses.asdict(holder))


def _create_exclusive(path: epath.Path, holder: Holder) -> bool | None:
  """Creates the local hold unless it exists: True if created, False if it exists, None if
  this filesystem has no hard links (gcsfuse and other FUSE mounts of object stores)."""
  tmp = atomic.temporary_path(path)
  tmp.write_text(json.dumps(dataclasses.asdict(holder)))
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  except OSError:
    return None
  finally:
    tmp.unlink()


def _claim(workdir, stale_after_s: float) -> Holder:
  """Makes this process the holder of `workdir`; raises WorkdirHeldError if a live job holds it."""
  path = epath.Path(workdir) / HOLD_NAME
  job, attempt = this_job()
  now = time.time()
  me = Holder(host=socket.gethostname(), pid=os.getpid(), job=job, attempt=attempt,
              started=now, heartbeat=now, token=secrets.token_hex(8))
  for _ in range(3):  # A competitor may claim between our read and our write; judge it again.
    current = read(workdir)
    if current is not None:
      reason = _gone_reason(current, me, stale_after_s)
      if reason is None:
        raise errors.WorkdirHeldError(_held_message(workdir, current, stale_after_s))
      logging.warning("Taking over %s from %s: %s.", path, current.describe(), reason)
    elif _is_local(path):
      created = _create_exclusive(path, me)
      if created:
        return me
      if created is False:
        continue
    _write(path, me)
    time.sleep(SETTLE_S)
    winner = read(workdir)
    if winner is not None and winner.token == me.token:
      return me
    if winner is not None:
      raise errors.WorkdirHeldError(_held_message(workdir, winner, stale_after_s))
  raise errors.WorkdirHeldError(f"The hold {path} kept changing while this job tried to claim "
                                "it; another job is starting in this workdir.")


class _Heartbeat:
  """Refreshes the hold's heartbeat from a daemon thread until stopped."""

  def __init__(self, workdir, holder: Holder, every_s: float):
    self._workdir, self._holder, self._every_s = workdir, holder, every_s
    self._stopped = threading.Event()
    self._thread = threading.Thread(target=self._run, name="workdir-hold", daemon=True)
    self._thread.start()

  def _run(self) -> None:
    path = epath.Path(self._workdir) / HOLD_NAME
    while not self._stopped.wait(self._every_s):
      try:
        current = read(self._workdir)
        if current is None or current.token != self._holder.token:
          logging.error("This job lost its hold on %s (%s); another job may write checkpoints "
                        "into this workdir.", path,
                        current.describe() if current else "the file was deleted")
          return
        self._holder = dataclasses.replace(self._holder, heartbeat=time.time())
        _write(path, self._holder)
      except Exception as e:  # A transient storage error must not end the heartbeat for good.
        logging.warning("Could not refresh the heartbeat of %s (%s: %s); retrying in %.0f s.",
                        path, type(e).__name__, e, self._every_s)

  def stop(self) -> None:
    self._stopped.set()
    self._thread.join()


def _release(workdir, holder: Holder, heartbeat: _Heartbeat, stale_after_s: float) -> None:
  heartbeat.stop()
  path = epath.Path(workdir) / HOLD_NAME
  try:
    current = read(workdir)
    if current is not None and current.token == holder.token:
      path.unlink()
  except Exception as e:  # Failing to release must not hide how the run ended.
    logging.warning("Could not release %s (%s: %s); the next job takes it over once its "
                    "heartbeat is %.0f s old.", path, type(e).__name__, e, stale_after_s)


@contextlib.contextmanager
def hold(workdir, stale_after_s: float):
  """Holds `workdir` (local or gs://) for this job while the block runs.

  Process 0 claims the hold, creating the workdir if needed; in a multi-process job every
  process learns the outcome, and all raise `errors.WorkdirHeldError` (naming the holder) when a
  live job holds the workdir. The hold is released when the block exits, however it exits.

  Args:
    workdir: the run's directory.
    stale_after_s: a hold whose heartbeat is older than this is taken over; the heartbeat is
      refreshed every `stale_after_s / HEARTBEATS_PER_STALE_PERIOD` seconds.
  """
  if stale_after_s <= 0:
    raise errors.ConfigError(f"hold_stale_after_s must be > 0, got {stale_after_s}.")
  holder, refusal = None, None
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    try:
      holder = _claim(workdir, stale_after_s)
    except errors.WorkdirHeldError as e:
      refusal = e
  if jax.process_count() > 1:
    refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)))
    if refused and refusal is None:
      current = read(workdir)
      refusal = errors.WorkdirHeldError(
          _held_message(workdir, current, stale_after_s) if current else
          f"Process 0 of this job found the workdir {workdir} held by another job; see its log.")
  if refusal is not None:
    raise refusal
  if holder is None:  # Processes other than 0 of a job that holds the workdir.
    yield
    return
  heartbeat = _Heartbeat(workdir, holder, stale_after_s / HEARTBEATS_PER_STALE_PERIOD)
  release = lambda: _release(workdir, holder, heartbeat, stale_after_s)
  try:
    # A lost peer ends this process without unwinding it: a rerun (from another host too) must
    # not find the workdir held until the hold goes stale.
    with distributed.cleanup_when_lost(release):
      yield
  finally:
    release()
