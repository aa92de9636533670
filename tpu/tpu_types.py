"""Cloud TPU accelerator types as gcloud spells them (v4-32, v5litepod-16, v5p-128, v6e-64).

The number in a type name counts TensorCores: two per chip on v4 and v5p, one on v5e and v6e.
Each generation has its default TPU VM software version (gcloud's --version) and its GKE node
labels; a slice of several hosts on GKE is laid out as xpk does, 4 chips per host.
"""

# The launcher runs on users' machines: Python 3.9 (macOS's python3) must read it too.
from __future__ import annotations

import dataclasses
import math
import re


@dataclasses.dataclass(frozen=True)
class Generation:
  prefix: str            # how accelerator type names start: "v4", "v5litepod", "v5p", "v6e".
  cores_per_chip: int    # TensorCores per chip, the unit of the number in a type name.
  runtime_version: str   # TPU VM software for JAX (cloud.google.com/tpu/docs/runtimes).
  gke_accelerator: str   # the node label cloud.google.com/gke-tpu-accelerator.
  torus_dims: int        # 3 (v4, v5p: AxBxC topologies) or 2 (v5e, v6e: AxB).


GENERATIONS = {g.prefix: g for g in (
    Generation("v4", 2, "tpu-ubuntu2204-base", "tpu-v4-podslice", 3),
    Generation("v5litepod", 1, "v2-alpha-tpuv5-lite", "tpu-v5-lite-podslice", 2),
    Generation("v5p", 2, "v2-alpha-tpuv5", "tpu-v5p-slice", 3),
    Generation("v6e", 1, "v2-alpha-tpuv6e", "tpu-v6e-slice", 2),
)}

# Chips per host of a multi-host slice on GKE (ct4p-hightpu-4t, ct5lp-hightpu-4t, ...).
GKE_CHIPS_PER_HOST = 4


@dataclasses.dataclass(frozen=True)
class TpuType:
  """One accelerator type, e.g. v4-32: 16 chips of generation v4."""
  name: str
  generation: Generation
  chips: int

  def topology(self) -> str:
    """The usual chip arrangement of a slice of this size ("2x2x4" for v4-32, "4x4" for
    v5litepod-16): starting from one chip, the last of the shortest sides doubles until the
    slice is reached (2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...; 1x1, 2x2, 2x4, 4x4, 4x8, ...)."""
    sides = [1] * self.generation.torus_dims
    if self.generation.torus_dims == 3 and self.chips >= 4:
      sides = [2, 2, 1]  # The smallest 3D slice is one host's 2x2x1 board.
    while math.prod(sides) < self.chips:
      shortest = min(sides)
      sides[max(i for i, side in enumerate(sides) if side == shortest)] *= 2
    if math.prod(sides) != self.chips:
      raise ValueError(f"{self.name} ({self.chips} chips) has no standard topology; pass its "
                       "chip arrangement with --topology, e.g. --topology=4x4x12.")
    return "x".join(map(str, sides))

  def gke_hosts(self) -> int:
    """Hosts (pods) of one slice on GKE."""
    return max(1, self.chips // GKE_CHIPS_PER_HOST)

  def gke_chips_per_host(self) -> int:
    return min(self.chips, GKE_CHIPS_PER_HOST)


def parse(name: str) -> TpuType:
  """The TpuType of an accelerator type name; ValueError naming the known generations."""
  match = re.fullmatch(r"(v\w+?)-(\d+)", name)
  generation = GENERATIONS.get(match[1]) if match else None
  if generation is None:
    raise ValueError(f"unknown TPU accelerator type {name!r}; use GENERATION-CORES with a "
                     f"generation of {', '.join(GENERATIONS)} (e.g. v4-32, v5litepod-16, "
                     "v5p-128, v6e-64)")
  cores = int(match[2])
  if cores < 1 or cores % generation.cores_per_chip:
    raise ValueError(f"{name!r}: a {generation.prefix} type counts TensorCores, "
                     f"{generation.cores_per_chip} per chip, so the number must be a multiple "
                     f"of {generation.cores_per_chip}")
  return TpuType(name, generation, cores // generation.cores_per_chip)
