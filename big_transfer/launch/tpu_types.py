"""Cloud TPU generations and slices: type names as gcloud spells them (v4-32, v5litepod-16,
v5p-128, v6e-64), JAX topology names (v4:2x2x4, v5e:4x4), and each generation's chip.

The number in a type name counts TensorCores: two per chip on v3, v4 and v5p, one on v5e and v6e.
JAX compiles for a chip of v4 or v5p as one device (megacore) and for each TensorCore of a v3
chip as a device of its own. Each generation has its default TPU VM software version (gcloud's
--version) and its GKE node labels; a slice of several hosts on GKE is laid out as xpk does, 4
chips per host. The launcher (tpu/launch) and the pre-flight compile (big_transfer.preflight)
both read this table.
"""

# The launcher runs on users' machines: Python 3.9 (macOS's python3) must read it too.
from __future__ import annotations

import dataclasses
import math
import re

from big_transfer import errors

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation; memory and peak rate per chip as Google publishes them
  (cloud.google.com/tpu/docs/system-architecture-tpu-vm and the per-version pages)."""
  prefix: str            # how accelerator type names start: "v4", "v5litepod", "v5p", "v6e".
  cores_per_chip: int    # TensorCores per chip, the unit of the number in a type name.
  runtime_version: str   # TPU VM software for JAX (cloud.google.com/tpu/docs/runtimes).
  gke_accelerator: str | None  # the node label cloud.google.com/gke-tpu-accelerator; None: not
                               # on GKE.
  torus_dims: int        # 3 (v4, v5p: AxBxC topologies) or 2 (v3, v5e, v6e: AxB).
  jax_name: str          # the generation in JAX's topology names: "v4" in "v4:2x2x4".
  megacore: bool         # JAX can compile for the chip's TensorCores as one device.
  hbm_gib: float         # high-bandwidth memory per chip.
  peak_bf16_tflops: float  # per chip.

  @property
  def devices_per_chip(self) -> int:
    """Devices JAX compiles for on one chip."""
    return 1 if self.megacore else self.cores_per_chip

  @property
  def hbm_bytes_per_device(self) -> int:
    return int(self.hbm_gib * GIB) // self.devices_per_chip

  @property
  def peak_bf16_flops_per_device(self) -> float:
    return self.peak_bf16_tflops * 1e12 / self.devices_per_chip


GENERATIONS = {g.prefix: g for g in (
    Generation("v3", 2, "tpu-ubuntu2204-base", None, 2, "v3", False, 32, 123),
    Generation("v4", 2, "tpu-ubuntu2204-base", "tpu-v4-podslice", 3, "v4", True, 32, 275),
    Generation("v5litepod", 1, "v2-alpha-tpuv5-lite", "tpu-v5-lite-podslice", 2, "v5e", False,
               16, 197),
    Generation("v5p", 2, "v2-alpha-tpuv5", "tpu-v5p-slice", 3, "v5p", True, 95, 459),
    Generation("v6e", 1, "v2-alpha-tpuv6e", "tpu-v6e-slice", 2, "v6e", False, 32, 918),
)}

# Chips per host of a multi-host slice on GKE (ct4p-hightpu-4t, ct5lp-hightpu-4t, ...).
GKE_CHIPS_PER_HOST = 4


@dataclasses.dataclass(frozen=True)
class TpuType:
  """One accelerator type, e.g. v4-32: 16 chips of generation v4."""
  name: str
  generation: Generation
  chips: int

  def standard_shape(self) -> tuple[int, ...] | None:
    """The usual chip arrangement of a slice of this size ((2, 2, 4) for v4-32, (4, 4) for
    v5litepod-16), or None if there is none: starting from one chip, the last of the shortest
    sides doubles until the slice is reached (2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...; 1x1, 1x2,
    2x2, 2x4, 4x4, 4x8, ...)."""
    sides = [1] * self.generation.torus_dims
    if self.generation.torus_dims == 3 and self.chips >= 4:
      sides = [2, 2, 1]  # The smallest 3D slice is one host's 2x2x1 board.
    while math.prod(sides) < self.chips:
      shortest = min(sides)
      sides[max(i for i, side in enumerate(sides) if side == shortest)] *= 2
    return tuple(sides) if math.prod(sides) == self.chips else None

  def topology(self) -> str:
    """The usual chip arrangement as GKE and gcloud write it: "2x2x4", "4x4"."""
    shape = self.standard_shape()
    if shape is None:
      raise errors.ConfigError(f"{self.name} ({self.chips} chips) has no standard topology; pass "
                               "its chip arrangement with --topology, e.g. --topology=4x4x12.")
    return "x".join(map(str, shape))

  def gke_hosts(self) -> int:
    """Hosts (pods) of one slice on GKE."""
    return max(1, self.chips // GKE_CHIPS_PER_HOST)

  def gke_chips_per_host(self) -> int:
    return min(self.chips, GKE_CHIPS_PER_HOST)


def parse(name: str) -> TpuType:
  """The TpuType of an accelerator type name; a ConfigError (a ValueError) naming the known
  generations."""
  match = re.fullmatch(r"(v\w+?)-(\d+)", name)
  generation = GENERATIONS.get(match[1]) if match else None
  if generation is None:
    raise errors.ConfigError(f"unknown TPU accelerator type {name!r}; use GENERATION-CORES with a "
                             f"generation of {', '.join(GENERATIONS)} (e.g. v4-32, v5litepod-16, "
                             "v5p-128, v6e-64)")
  cores = int(match[2])
  if cores < 1 or cores % generation.cores_per_chip:
    raise errors.ConfigError(f"{name!r}: a {generation.prefix} type counts TensorCores, "
                             f"{generation.cores_per_chip} per chip, so the number must be a "
                             f"multiple of {generation.cores_per_chip}")
  return TpuType(name, generation, cores // generation.cores_per_chip)


@dataclasses.dataclass(frozen=True)
class Slice:
  """Chips of one generation in a torus, as JAX compiles for them.

  Attributes:
    generation: the chips' generation.
    shape: chips along each side, e.g. (2, 2, 4).
  """
  generation: Generation
  shape: tuple[int, ...]

  @property
  def jax_topology(self) -> str:
    """The name `jax.experimental.topologies.get_topology_desc` takes, e.g. "v4:2x2x4"."""
    return f"{self.generation.jax_name}:{'x'.join(map(str, self.shape))}"

  @property
  def accelerator_type(self) -> str:
    """The gcloud accelerator type of this many chips, e.g. "v4-32"."""
    return f"{self.generation.prefix}-{self.chips * self.generation.cores_per_chip}"

  @property
  def chips(self) -> int:
    return math.prod(self.shape)

  @property
  def devices(self) -> int:
    return self.chips * self.generation.devices_per_chip

  @property
  def chip_config_name(self) -> str | None:
    """JAX's option that makes a device of each chip's TensorCores together."""
    return "megacore" if self.generation.megacore else None


def parse_slice(name: str) -> Slice:
  """The Slice of an accelerator type (v4-32, v5litepod-16) or of a JAX topology (v4:2x2x4,
  v5e:4x4; the generation may also be spelt as in type names, v5litepod:4x4); a ConfigError
  naming the value and the known names otherwise."""
  by_jax_name = {g.jax_name: g for g in GENERATIONS.values()}
  match = re.fullmatch(r"(v\w+):(\d+(?:x\d+){1,2})", name)
  if match and (match[1] in by_jax_name or match[1] in GENERATIONS):
    generation = by_jax_name.get(match[1]) or GENERATIONS[match[1]]
    shape = tuple(int(side) for side in match[2].split("x"))
    if min(shape) < 1:
      raise errors.ConfigError(f"TPU topology {name!r} has a side of 0 chips.")
    return Slice(generation, shape)
  if not re.fullmatch(r"v\w+?-\d+", name) or name.split("-")[0] not in GENERATIONS:
    raise errors.ConfigError(
        f"Unknown TPU topology {name!r}. Use an accelerator type as gcloud names it (e.g. "
        "v4-32, v5litepod-16, v5p-128, v6e-64; generations "
        f"{', '.join(GENERATIONS)}) or a JAX topology GENERATION:AxB[xC] (e.g. v4:2x2x4, "
        f"v5e:4x4; generations {', '.join(by_jax_name)}).")
  tpu = parse(name)
  shape = tpu.standard_shape()
  if shape is None:
    sides = "AxBxC" if tpu.generation.torus_dims == 3 else "AxB"
    raise errors.ConfigError(f"{name} ({tpu.chips} chips) has no standard chip arrangement; name "
                             f"it as a JAX topology {tpu.generation.jax_name}:{sides} of "
                             f"{tpu.chips} chips.")
  return Slice(tpu.generation, shape)
