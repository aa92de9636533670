"""The one place sharding is decided: the device mesh, parameter rules and the batch layout.

The mesh has a `data` axis (pure data parallelism: every device holds all parameters) and an
`fsdp` axis (data parallelism whose devices also split the parameters and optimizer state, so an
R152x4 and its momentum need not fit on one chip). The batch is split over both axes. Parameters
are placed by a short ordered table of `(regex, rule)` pairs matched against '/'-joined paths;
the first match wins. A further axis (say `model`) would be one more entry in `AXES`, one more
argument to `make_mesh` and one more rule; the batch keeps `BATCH_AXES`.
"""

import logging
import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from big_transfer import errors

AXES = ("data", "fsdp")
# Axes the leading (example) dimension of a batch is split over.
BATCH_AXES = ("data", "fsdp")

RULES = ("fsdp", "replicate")
DEFAULT_RULES = ((".*", "fsdp"),)


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Returns a (data, fsdp) mesh over `devices` (default: all devices of all processes).

  Args:
    data: size of the `data` axis; -1 takes the devices the other axes leave.
    fsdp: size of the `fsdp` axis; -1 likewise (at most one axis may be -1).
    devices: the devices to lay out; `jax.make_mesh` orders them so that neighbours on the mesh
      are neighbours on the interconnect, across hosts too.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = _resolve_axis_sizes({"data": data, "fsdp": fsdp}, len(devices))
  # Auto axes: shardings are given to `jax.jit(in_shardings=..., out_shardings=...)` and the
  # models need no sharding annotations of their own.
  axis_types = (AxisType.Auto,) * len(AXES)
  if len({getattr(device, "slice_index", 0) for device in devices}) > 1:
    return Mesh(multislice_device_grid(shape, devices), AXES, axis_types=axis_types)
  return jax.make_mesh(shape, AXES, axis_types=axis_types, devices=devices)


def multislice_device_grid(shape: tuple[int, ...], devices: Sequence[jax.Device]) -> np.ndarray:
  """Devices of several TPU slices laid out as `shape`, which `jax.make_mesh` refuses to do.

  The `data` axis spans the slices (their data-center network carries only the gradient
  all-reduce); each slice holds a contiguous block of it with the `fsdp` axis inside the slice,
  on the fast interconnect.
  """
  slices = len({device.slice_index for device in devices})
  if shape[0] % slices:
    raise errors.ConfigError(
        f"--config.mesh.data={shape[0]} is not a multiple of the {slices} TPU slices; the data "
        f"axis spans the slices, so set it to a multiple of {slices} (e.g. -1).")
  within_slice = (shape[0] // slices, *shape[1:])
  across_slices = (slices,) + (1,) * (len(shape) - 1)
  return mesh_utils.create_hybrid_device_mesh(within_slice, across_slices, devices)


def _resolve_axis_sizes(sizes: dict[str, int], num_devices: int) -> tuple[int, ...]:
  """Replaces a -1 axis size by what the others leave and checks the product is `num_devices`."""
  flags = " ".join(f"--config.mesh.{name}={size}" for name, size in sizes.items())
  for name, size in sizes.items():
    if size != -1 and size < 1:
      raise errors.ConfigError(f"Mesh axis {name} has size {size}; use a positive size or -1 "
                               f"({flags}).")
  free = [name for name, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise errors.ConfigError(f"Mesh axes {free} are all -1 ({flags}); set all but one of them.")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  resolved = {name: num_devices // fixed if size == -1 else size for name, size in sizes.items()}
  if math.prod(resolved.values()) != num_devices:
    shape = " x ".join(f"{name}={size}" for name, size in sizes.items())
    raise errors.ConfigError(f"Mesh {shape} does not fit {num_devices} devices; set sizes whose "
                             f"product is {num_devices}, e.g. --config.mesh.data=-1 "
                             "--config.mesh.fsdp=1.")
  return tuple(resolved.values())


def param_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES, min_fsdp_size: int = 2**16):
  """Returns a pytree of `NamedSharding`s shaped like `tree`, one per leaf.

  Args:
    tree: pytree of arrays or `jax.ShapeDtypeStruct`s: parameters, or an optax state (its
      momentum mirrors the parameters and gets the same placement; scalars replicate).
    mesh: a mesh from `make_mesh`.
    rules: ordered `(regex, rule)` pairs; the first regex found (`re.search`) in a leaf's
      '/'-joined path decides. Searching rather than anchoring lets one table serve both the
      parameters (`conv1/kernel`) and the optimizer state (`1/trace/conv1/kernel`).
      Rules: "fsdp" splits the largest dimension divisible by the fsdp axis size over `fsdp`
      (ties go to the later dimension, the output channels of a kernel), replicating leaves
      with no such dimension or fewer than `min_fsdp_size` elements, whose all-gather would
      cost more than they save; "replicate" keeps a full copy on every device.
    min_fsdp_size: leaves with fewer elements are replicated by the "fsdp" rule.
  """
  compiled = [(re.compile(pattern), _check_rule(pattern, rule)) for pattern, rule in rules]

  def sharding_for(path, leaf):
    name = "/".join(_key_name(key) for key in path)
    rule = next((rule for pattern, rule in compiled if pattern.search(name)), None)
    if rule is None:
      raise ValueError(f"No sharding rule matches parameter {name!r}; add a rule for it or a "
                       "catch-all ('.*', 'replicate') at the end of the table.")
    shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
    if rule == "fsdp":
      return NamedSharding(mesh, _fsdp_spec(shape, mesh.shape["fsdp"], min_fsdp_size))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree_util.tree_map_with_path(sharding_for, tree)


def _check_rule(pattern: str, rule: str) -> str:
  if rule not in RULES:
    raise ValueError(f"Unknown sharding rule {rule!r} for pattern {pattern!r}; use one of {RULES}.")
  return rule


def _key_name(key) -> str:
  """The readable part of one pytree path entry (a dict key, attribute or sequence index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_fsdp_size: int) -> PartitionSpec:
  """Splits the largest dimension of `shape` divisible by `fsdp_size`, else replicates."""
  if fsdp_size == 1 or math.prod(shape) < min_fsdp_size:
    return PartitionSpec()
  by_size = sorted(range(len(shape)), key=lambda dim: (shape[dim], dim), reverse=True)
  for dim in by_size:
    if shape[dim] % fsdp_size == 0:
      return PartitionSpec(*([None] * dim), "fsdp")
  return PartitionSpec()


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits the leading (example) dimension of a batch over all batch axes of the mesh."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device: step counters, scalars, small state."""
  return NamedSharding(mesh, PartitionSpec())


def _batch_devices(mesh: Mesh) -> int:
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def check_batch_size(global_batch_size: int, mesh: Mesh, grad_accum_steps: int = 1) -> None:
  """Raises unless every accumulation step gives each batch device the same whole number of
  examples; `grad_accum_steps` >= 1 (`recipes.schema.check` checks a run's)."""
  devices = _batch_devices(mesh)
  unit = devices * grad_accum_steps
  if global_batch_size < 1 or global_batch_size % unit:
    sizes = " x ".join(f"{axis}={mesh.shape[axis]}" for axis in BATCH_AXES)
    raise errors.ConfigError(f"Global batch size {global_batch_size} is not divisible by "
                             f"grad_accum_steps {grad_accum_steps} x {devices} batch devices "
                             f"({sizes}) = {unit}; set --config.batch_size to a multiple of "
                             f"{unit} or change --config.grad_accum_steps.")


def check_eval_batch_size(eval_batch_size: int, mesh: Mesh) -> None:
  """Raises unless every batch device gets the same whole number of examples of an eval batch
  (evaluation pads the last batch, never the batch size)."""
  devices = _batch_devices(mesh)
  if eval_batch_size % devices:
    sizes = " x ".join(f"{axis}={mesh.shape[axis]}" for axis in BATCH_AXES)
    raise errors.ConfigError(f"eval_batch_size {eval_batch_size} is not divisible by the "
                             f"{devices} batch devices ({sizes}); set --config.eval_batch_size to "
                             f"a multiple of {devices}.")


# Below this many examples per device and step, an accelerator spends most of its time waiting.
MIN_EFFICIENT_PER_DEVICE_BATCH = 8


def describe(mesh: Mesh, global_batch_size: int, grad_accum_steps: int = 1) -> str:
  """One line on the platform, processes, devices, mesh and batch split, for a run's log.

  Also logs a warning when each device gets fewer than MIN_EFFICIENT_PER_DEVICE_BATCH examples
  per (micro-)step: GroupNorm normalizes each example on its own, so results do not depend on
  the per-device batch, but such tiny batches leave the accelerators mostly idle. The batch
  is one `check_batch_size` accepted.
  """
  devices = _batch_devices(mesh)
  shape = " x ".join(f"{axis}={size}" for axis, size in mesh.shape.items())
  per_device = global_batch_size // (devices * grad_accum_steps)
  first = mesh.devices.flat[0]
  if per_device < MIN_EFFICIENT_PER_DEVICE_BATCH:
    logging.warning(
        "Each of the %d devices gets %d examples per step (global batch %d / %d accumulation "
        "steps); below %d an accelerator mostly waits. Raise --config.batch_size, lower "
        "--config.grad_accum_steps, or train on fewer devices.", devices, per_device,
        global_batch_size, grad_accum_steps, MIN_EFFICIENT_PER_DEVICE_BATCH)
  return (f"platform {first.platform} ({first.device_kind}), "
          f"process {jax.process_index()} of {jax.process_count()}, "
          f"{len(mesh.local_devices)} local / {mesh.devices.size} global devices, mesh {shape}, "
          f"global batch {global_batch_size} = {per_device} per device x {devices} devices x "
          f"{grad_accum_steps} accumulation steps")
