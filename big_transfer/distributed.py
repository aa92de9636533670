"""Joining a multi-process job through JAX's own runtime (no launcher protocol of ours).

`jax.distributed.initialize()` finds the coordinator by itself on Cloud TPU pods and SLURM
allocations. Elsewhere (Kubernetes, a few local processes) set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID; JAX reads the address but not the other two, so they are
passed on here.
"""

import os

import jax


def _in_multiprocess_environment() -> bool:
  env = os.environ
  if "JAX_COORDINATOR_ADDRESS" in env or "JAX_NUM_PROCESSES" in env:
    return True
  if int(env.get("SLURM_NTASKS", "1")) > 1:
    return True
  # A Cloud TPU pod slice lists its workers; a single TPU VM lists one.
  return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize() -> None:
  """Calls `jax.distributed.initialize()` once when this process is part of a larger job."""
  if jax.distributed.is_initialized() or not _in_multiprocess_environment():
    return
  # CPU processes need a collectives implementation to talk to each other; it changes nothing
  # for accelerator backends.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if "JAX_NUM_PROCESSES" in os.environ:
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
  if "JAX_PROCESS_ID" in os.environ:
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)
