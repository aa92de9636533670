"""Kubernetes JobSet manifests: TPU slices (several slices as replicas) or GPU nodes on GKE.

The shape xpk generates, wired the way `big_transfer.launch.distributed` joins a job: every pod runs
`python -m big_transfer.main ARGS`; JAX_COORDINATOR_ADDRESS names pod 0 of slice 0 through the
JobSet's headless service (pod HOST of slice SLICE is NAME-workers-SLICE-HOST.NAME),
JAX_NUM_PROCESSES counts all pods and JAX_PROCESS_ID = SLICE x hosts per slice + HOST.

Restarts: exit 143 (SIGTERM: the run saved a checkpoint, as on preemption or eviction) and 137
(killed when the grace period ran out) restart the whole JobSet, which resumes from the latest
checkpoint, up to `max_restarts` times. The old pods all end before new ones start
(BlockingRecreate), so two attempts never train at once. Any other failure, such as exit 1 for
a bad setting or a workdir another job holds, fails the JobSet at once: a rerun would fail again.
"""

# The launcher runs on users' machines: Python 3.9 (macOS's python3) must read it too.
from __future__ import annotations

import dataclasses
import json
import re

from big_transfer.launch import tpu_types

API_VERSION = "jobset.x-k8s.io/v1alpha2"
REPLICATED_JOB = "workers"
CONTAINER = "train"
RETRIABLE_EXIT_CODES = (137, 143)
COORDINATOR_PORT = 8476
# Pod hostnames NAME-workers-SLICE-HOST must stay DNS labels of at most 63 characters.
MAX_NAME_LENGTH = 40

# Exports the process id from the slice and pod indices, then runs the training command with the
# container's arguments. Kubernetes turns `$$` into `$` (its own `$(VAR)` syntax is left alone).
_START = ("export JAX_PROCESS_ID=$$((SLICE_INDEX * {hosts} + HOST_INDEX)); "
          'exec python -m big_transfer.main "$@"')


@dataclasses.dataclass(frozen=True)
class Accelerators:
  """What each pod gets and where it runs."""
  slices: int
  hosts_per_slice: int
  limits: dict
  node_selector: dict
  annotations: dict  # of the JobSet


def tpu_slices(tpu: tpu_types.TpuType, slices: int = 1,
               topology: str | None = None) -> Accelerators:
  """`slices` slices of type `tpu`; `topology` overrides the usual chip arrangement."""
  if tpu.generation.gke_accelerator is None:
    raise ValueError(f"GKE has no {tpu.generation.prefix} node pools; run {tpu.name} as Cloud TPU "
                     "VMs (tpu/launch create)")
  topology = topology or tpu.topology()
  chips = 1
  for side in topology.split("x"):
    chips *= int(side)
  if chips != tpu.chips:
    raise ValueError(f"topology {topology} holds {chips} chips but {tpu.name} has {tpu.chips}")
  return Accelerators(
      slices=slices, hosts_per_slice=tpu.gke_hosts(),
      limits={"google.com/tpu": tpu.gke_chips_per_host()},
      node_selector={"cloud.google.com/gke-tpu-accelerator": tpu.generation.gke_accelerator,
                     "cloud.google.com/gke-tpu-topology": topology},
      # Each slice's pods on a node pool of their own, as a slice is one physical unit.
      annotations={"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"})


def gpu_nodes(nodes: int, gpus_per_node: int, gpu_type: str) -> Accelerators:
  """`nodes` nodes with `gpus_per_node` GPUs of GKE accelerator `gpu_type`, one pod each."""
  return Accelerators(slices=1, hosts_per_slice=nodes, limits={"nvidia.com/gpu": gpus_per_node},
                      node_selector={"cloud.google.com/gke-accelerator": gpu_type},
                      annotations={})


def _from_annotation(name: str, annotation: str) -> dict:
  return {"name": name, "valueFrom": {"fieldRef": {
      "fieldPath": f"metadata.annotations['{annotation}']"}}}


def manifest(name: str, image: str, args: list[str], accelerators: Accelerators,
             env: dict[str, str], max_restarts: int = 10, grace_period_s: int = 300) -> dict:
  """The JobSet running `python -m big_transfer.main ARGS` in `image` on `accelerators`."""
  if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > MAX_NAME_LENGTH:
    raise ValueError(f"JobSet name {name!r} must be lowercase letters, digits and '-', start "
                     f"with a letter and have at most {MAX_NAME_LENGTH} characters")
  hosts = accelerators.hosts_per_slice
  container_env = [
      {"name": "JAX_COORDINATOR_ADDRESS",
       "value": f"{name}-{REPLICATED_JOB}-0-0.{name}:{COORDINATOR_PORT}"},
      {"name": "JAX_NUM_PROCESSES", "value": str(accelerators.slices * hosts)},
      _from_annotation("SLICE_INDEX", "jobset.sigs.k8s.io/job-index"),
      _from_annotation("HOST_INDEX", "batch.kubernetes.io/job-completion-index"),
      # Who holds the workdir (big_transfer.launch.workdir_hold): a later attempt of this JobSet
      # takes over the hold of an earlier one at once.
      _from_annotation("BIG_TRANSFER_JOB_ID", "jobset.sigs.k8s.io/jobset-uid"),
      _from_annotation("BIG_TRANSFER_JOB_ATTEMPT", "jobset.sigs.k8s.io/restart-attempt"),
  ] + [{"name": key, "value": value} for key, value in env.items()]
  pod = {
      "restartPolicy": "Never",
      "hostNetwork": True,
      "dnsPolicy": "ClusterFirstWithHostNet",
      # Time to save a checkpoint after SIGTERM before the pod is killed.
      "terminationGracePeriodSeconds": grace_period_s,
      "nodeSelector": accelerators.node_selector,
      "containers": [{
          "name": CONTAINER,
          "image": image,
          "command": ["sh", "-c", _START.format(hosts=hosts), "big_transfer", *args],
          "env": container_env,
          "ports": [{"containerPort": COORDINATOR_PORT}],
          "resources": {"limits": accelerators.limits},
      }],
  }
  job = {
      "parallelism": hosts,
      "completions": hosts,
      "completionMode": "Indexed",
      "backoffLimit": 0,
      "podFailurePolicy": {"rules": [{
          "action": "FailJob",
          "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn",
                          "values": list(RETRIABLE_EXIT_CODES)}}]},
      "template": {"spec": pod},
  }
  metadata = {"name": name}
  if accelerators.annotations:
    metadata["annotations"] = accelerators.annotations
  return {
      "apiVersion": API_VERSION,
      "kind": "JobSet",
      "metadata": metadata,
      "spec": {
          "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
          "failurePolicy": {
              "maxRestarts": max_restarts,
              "restartStrategy": "BlockingRecreate",
              "rules": [{"name": "fail-without-restart", "action": "FailJobSet",
                         "onJobFailureReasons": ["PodFailurePolicy"]}],
          },
          "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": accelerators.slices,
                              "template": {"spec": job}}],
      },
  }


def to_yaml(value) -> str:
  """YAML for a tree of dicts, lists, strings, numbers and booleans (strings double-quoted)."""
  return "\n".join(_yaml_lines(value, 0)) + "\n"


def _scalar(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, dict):
    return "{}"
  if isinstance(value, list):
    return "[]"
  return json.dumps(value)  # A JSON string is a YAML double-quoted scalar.


def _yaml_lines(value, indent: int) -> list[str]:
  pad = "  " * indent
  lines = []
  if isinstance(value, dict):
    for key, item in value.items():
      if isinstance(item, (dict, list)) and item:
        lines.append(f"{pad}{key}:")
        lines.extend(_yaml_lines(item, indent + 1))
      else:
        lines.append(f"{pad}{key}: {_scalar(item)}")
  else:
    for item in value:
      if isinstance(item, (dict, list)) and item:
        first, *rest = _yaml_lines(item, 0)
        lines.append(f"{pad}- {first}")
        lines.extend(f"{pad}  {line}" for line in rest)
      else:
        lines.append(f"{pad}- {_scalar(item)}")
  return lines
