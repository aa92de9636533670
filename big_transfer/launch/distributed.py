"""Joining a multi-process job through JAX's own runtime (no launcher protocol of ours).

`jax.distributed.initialize()` is called only when this process is part of a larger job: asked
for through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (Kubernetes JobSets,
several processes on one machine), an `srun` step of several SLURM tasks, or a Cloud TPU VM
(JAX reads the slice's workers from the TPU environment or metadata server; a single TPU VM is
a job of one process). A workstation, a single SLURM task or a single GKE TPU host runs alone,
so nothing ever waits for processes that will not come. JAX reads the coordinator address but
not the process count and id, so those two are passed on here.

A lost peer (a process killed, its host gone) is noticed by JAX's coordination service when its
heartbeats stop for `peer_timeout_s`. By default the runtime then aborts every other process with
a page of C++ log and stack, and a survivor blocked in a collective would otherwise wait forever.
Here the job runs in JAX's recoverable mode, where the service records the dead process instead
of aborting the others, and `peers_watched` asks the service which processes are alive: a missing
one ends this process with one `error:` line naming it. Checkpoints stay safe: orbax commits a
checkpoint only after every process wrote its part, so a save the lost process never finished
stays under a temporary name that no restore reads. Process 0 hosts the service: when it is the
one lost, the runtime's own abort reaches the others before the watch can (jaxlib 0.10's
`missed_heartbeat_callback` would let us word it, but calling it from Python aborts with
std::bad_cast). The watch's exit runs no `finally` of the main thread, so what must not outlive
the process (process 0's workdir hold) registers a cleanup with `cleanup_when_lost`.
"""

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import jax
from jax._src import distributed as jax_distributed

from big_transfer import errors

# Seconds without heartbeats after which a process of the job counts as lost, unless a program
# passes its own (`--config.peer_timeout_s`). JAX's default is 100 s.
DEFAULT_PEER_TIMEOUT_S = 60
# How often the watch asks the coordination service which processes are alive.
_WATCH_INTERVAL_S = 1.0
# Seconds a lost peer's exit waits for the cleanups of `cleanup_when_lost` (a remote file
# system may hang; the exit must not).
_CLEANUP_S = 10.0
# The cleanups to run before `_lost` ends this process, innermost last.
_cleanups: list[Callable[[], None]] = []


def _hosts_listed(variable: str) -> int | None:
  """How many workers a comma-separated host list names; None when it is not set."""
  if variable not in os.environ:
    return None
  return len([host for host in os.environ[variable].split(",") if host])


def _on_cloud_tpu_vm() -> bool:
  # `import jax` sets this when libtpu finds TPU chips on this machine (a Cloud TPU VM or a GKE
  # TPU node); JAX has no public name for it.
  from jax._src import cloud_tpu_init
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def cluster() -> str | None:
  """The kind of multi-process job this process belongs to, or None to run alone.

  "jax-env": the JAX_* variables; "slurm": an srun step of several tasks; "tpu-pod": a TPU slice
  of several hosts; "tpu-vm": a Cloud TPU VM, whose workers JAX finds itself.
  """
  env = os.environ
  if any(key in env for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")):
    return "jax-env"
  if "SLURM_JOB_ID" in env:
    # srun sets SLURM_STEP_NUM_TASKS; a batch script running python without srun sees the
    # allocation's SLURM_NTASKS but is one process, and must not wait for the others.
    step_tasks = int(env.get("SLURM_STEP_NUM_TASKS", "0"))
    if step_tasks > 1:
      return "slurm"
    if not step_tasks and int(env.get("SLURM_NTASKS", "1")) > 1:
      logging.warning("This SLURM job has %s tasks but this process was not started by srun; it "
                      "runs alone. Start it with `srun python -m big_transfer.main ...` (see "
                      "tpu/slurm/train.sbatch) to train on all of them.", env["SLURM_NTASKS"])
  # GKE lists a TPU slice's hosts in TPU_WORKER_HOSTNAMES (one host: a single TPU VM).
  listed = _hosts_listed("TPU_WORKER_HOSTNAMES")
  if listed is not None:
    return "tpu-pod" if listed > 1 else None
  if _on_cloud_tpu_vm():
    return "tpu-vm"
  return None


def initialize(peer_timeout_s: int = DEFAULT_PEER_TIMEOUT_S) -> None:
  """Calls `jax.distributed.initialize()` once when this process is part of a larger job.

  Args:
    peer_timeout_s: seconds without heartbeats after which a process counts as lost.
  """
  if isinstance(peer_timeout_s, bool) or not isinstance(peer_timeout_s, int) or peer_timeout_s < 1:
    raise errors.ConfigError(f"peer_timeout_s must be a whole number of seconds >= 1, got "
                             f"{peer_timeout_s!r} (--config.peer_timeout_s).")
  if jax.distributed.is_initialized():
    return
  kind = cluster()
  if kind is None:
    return
  # CPU processes need a collectives implementation to talk to each other; it changes nothing
  # for accelerator backends.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if "JAX_NUM_PROCESSES" in os.environ:
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
  if "JAX_PROCESS_ID" in os.environ:
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  # The service keeps running when a process dies, so `peers_watched` can tell the user which.
  jax.config.update("jax_enable_recoverability", True)
  logging.info("Joining a multi-process job (%s).", kind)
  jax.distributed.initialize(heartbeat_timeout_seconds=peer_timeout_s, **kwargs)
  global _peer_timeout_s
  _peer_timeout_s = peer_timeout_s


_peer_timeout_s = DEFAULT_PEER_TIMEOUT_S


def _lost(processes: list[int], how: str) -> None:
  """Ends this process at once with one line naming the lost `processes`: the main thread may be
  blocked in a collective that will never complete, so nothing else could end it."""
  count = jax.process_count()
  names = ", ".join(str(p) for p in processes)
  print(f"error: Lost process {names} of this {count}-process job ({how}); process "
        f"{jax.process_index()} stops too. Rerun all {count} processes with the same command to "
        "resume from the latest complete checkpoint.", file=sys.stderr, flush=True)
  # In a thread of their own, waited for at most _CLEANUP_S: only the exit is certain.
  cleanup = threading.Thread(target=_run_cleanups, name="lost-peer-cleanup", daemon=True)
  cleanup.start()
  cleanup.join(_CLEANUP_S)
  os._exit(1)  # Not sys.exit: the main thread may never return from a collective.


def _run_cleanups() -> None:
  for fn in reversed(list(_cleanups)):
    try:
      fn()
    except Exception as e:  # One failing cleanup must not keep the others from running.
      logging.warning("A cleanup before stopping failed (%s: %s).", type(e).__name__, e)


@contextlib.contextmanager
def cleanup_when_lost(fn: Callable[[], None]):
  """While the block runs, a lost peer's exit of this process (which runs no `finally`) first
  calls `fn()` from another thread, waiting for it at most `_CLEANUP_S` seconds."""
  _cleanups.append(fn)
  try:
    yield
  finally:
    _cleanups.remove(fn)


class _PeerWatch(threading.Thread):
  """Asks the coordination service every `_WATCH_INTERVAL_S` which processes are alive.

  The service answers `client.get_live_nodes` when every live process has asked (like a
  barrier), so every process runs a watch."""

  def __init__(self, client, num_processes: int):
    super().__init__(name="peer-watch", daemon=True)
    self._client = client
    self._everyone = list(range(num_processes))
    self.stopping = threading.Event()

  def run(self):
    while not self.stopping.is_set():
      try:
        live = self._client.get_live_nodes(self._everyone)
      except jax.errors.JaxRuntimeError:  # The service itself is gone: process 0 hosts it.
        if not self.stopping.is_set():
          _lost([0], f"the coordination service it hosts at "
                     f"{jax_distributed.global_state.coordinator_address} stopped answering")
        return
      lost = [p for p in self._everyone if p not in live]
      if lost and not self.stopping.is_set():
        _lost(lost, f"no heartbeat for {_peer_timeout_s} s, --config.peer_timeout_s")
      self.stopping.wait(_WATCH_INTERVAL_S)


@contextlib.contextmanager
def peers_watched():
  """While the body runs, a lost process of the job ends this one with one `error:` line.

  On the way out every process waits for the others (a barrier of the coordination service), so
  a process that finishes first is not taken for lost by one still closing its files.
  """
  client = jax_distributed.global_state.client
  if client is None or jax.process_count() == 1:
    yield
    return
  watch = _PeerWatch(client, jax.process_count())
  watch.start()
  failed = True
  try:
    yield
    failed = False
  finally:
    try:
      client.wait_at_barrier("big_transfer:peers_done", _peer_timeout_s * 1000)
    except jax.errors.JaxRuntimeError:  # The barrier timed out or the service is gone.
      # A process that never arrives is lost; after a failure of this one, its own error says it.
      if not failed:
        _lost([p for p in range(jax.process_count()) if p != jax.process_index()],
              f"it did not finish within {_peer_timeout_s} s of this one")
      watch.stopping.set()
    else:
      watch.stopping.set()
      _leave(client)


def _leave(client) -> None:
  """Leaves the job, process 0 last: in recoverable mode JAX's shutdown does not wait for the
  others, and a process whose coordination service (hosted by process 0) is already gone aborts
  as it leaves."""
  if jax.process_index() == 0:
    everyone = list(range(jax.process_count()))
    # A process that has left is not alive. Bounded: one that never leaves is lost anyway.
    deadline = time.monotonic() + _peer_timeout_s
    while len(client.get_live_nodes(everyone)) > 1 and time.monotonic() < deadline:
      time.sleep(0.05)
  jax.distributed.shutdown()
