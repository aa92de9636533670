"""Joining a multi-process job through JAX's own runtime (no launcher protocol of ours).

`jax.distributed.initialize()` is called only when this process is part of a larger job: asked
for through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (Kubernetes JobSets,
several processes on one machine), an `srun` step of several SLURM tasks, or a Cloud TPU VM
(JAX reads the slice's workers from the TPU environment or metadata server; a single TPU VM is
a job of one process). A workstation, a single SLURM task or a single GKE TPU host runs alone,
so nothing ever waits for processes that will not come. JAX reads the coordinator address but
not the process count and id, so those two are passed on here.
"""

import logging
import os

import jax


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


def initialize() -> None:
  """Calls `jax.distributed.initialize()` once when this process is part of a larger job."""
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
  logging.info("Joining a multi-process job (%s).", kind)
  jax.distributed.initialize(**kwargs)
