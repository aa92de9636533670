"""Whether a train step fits a device's memory, and what to change when it does not.

The bytes come from the abstract state and batch (`bytes_per_device`) and from XLA's
`memory_analysis()` of the compiled step (`total_bytes`); the advice names the flags to pass.
"""

import dataclasses
import math

import jax
import ml_collections


def bytes_per_device(tree) -> int:
  """Bytes that one device holds of a tree of ShapeDtypeStructs with shardings."""
  return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(tree))


def total_bytes(memory) -> int:
  """What a compiled step holds at once per device, from its `memory_analysis()`: inputs,
  outputs not written over the donated inputs (aliases), temporaries and the program."""
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes
          + memory.generated_code_size_in_bytes)


def in_units(value: float, units: tuple[tuple[str, float], ...], spec: str) -> str:
  """`value` in the largest of `units` ((name, scale), largest first) it reaches, formatted with
  `spec`; in the last unit when it reaches none."""
  for unit, scale in units:
    if value >= scale:
      break
  return f"{value / scale:{spec}} {unit}"


def size(num_bytes: float) -> str:
  """`num_bytes` in GiB, MiB, KiB or B, as the pre-flight prints it ("2.00 GiB")."""
  if num_bytes < 2**10:
    return f"{num_bytes:.0f} B"
  return in_units(num_bytes, (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)), ".2f")


@dataclasses.dataclass(frozen=True)
class Footprint:
  """Bytes that one device holds during a train step.

  Attributes:
    params: the parameters (float32).
    opt_state: the optimizer's state (the momentum).
    batch: the device's share of the batch.
    teacher: a distillation run's frozen teachers (their parameters, laid out like the
      student's), 0 for other runs.
    temporaries: XLA's scratch space: activations kept for the backward pass, gradients, ...;
      None when XLA refused to compile the step.
    total: what the compiled step holds at once: its inputs, the outputs not written over the
      donated state, the temporaries and the program itself; None likewise.
  """
  params: int
  opt_state: int
  batch: int
  teacher: int = 0
  temporaries: int | None = None
  total: int | None = None

  @property
  def state(self) -> int:
    """What stays on the device from step to step: parameters, optimizer state, teachers."""
    return self.params + self.opt_state + self.teacher

  def breakdown(self) -> str:
    held = "parameters + optimizer state" + (" + teachers" if self.teacher else "")
    parts = [f"{held} {size(self.state)}", f"batch {size(self.batch)}"]
    if self.temporaries is not None:
      parts.append(f"temporaries {size(self.temporaries)}")
    return ", ".join(parts)


def advice(footprint: Footprint, hbm: int, mesh_shape: dict[str, int],
           config: ml_collections.ConfigDict) -> str:
  """What to change so that a step that needs more than `hbm` bytes per device fits.

  Parameters and optimizer state above half the HBM (the gradients need as much again, and the
  activations more) are split over more devices with FSDP; otherwise the activations, which
  grow with the micro-batch, are shrunk by gradient accumulation or a smaller batch.
  """
  devices = math.prod(mesh_shape.values())
  fsdp = mesh_shape["fsdp"]
  if footprint.state > hbm / 2:
    for fsdp_size in range(fsdp + 1, devices + 1):
      if devices % fsdp_size == 0 and footprint.state * fsdp / fsdp_size <= hbm / 2:
        data_flag = "" if config.mesh.data == -1 else " --config.mesh.data=-1"
        return (f"split the parameters and optimizer state over more devices with "
                f"--config.mesh.fsdp={fsdp_size}{data_flag} (about "
                f"{size(footprint.state * fsdp // fsdp_size)} per device)")
    return (f"even split over all {devices} devices the parameters and optimizer state need "
            f"about {size(footprint.state * fsdp // devices)} per device; use a slice with more "
            "chips or a smaller model")
  batch, accum = config.batch_size, config.grad_accum_steps
  for factor in range(2, batch // (devices * accum) + 1):
    if batch % (devices * accum * factor):
      continue
    if footprint.temporaries is None:
      more = " or more"  # XLA said only that it does not fit, not by how much.
    elif footprint.total - footprint.temporaries * (1 - 1 / factor) > hbm:
      continue
    else:
      more = ""
    return (f"split each batch into smaller micro-batches with --config.grad_accum_steps="
            f"{accum * factor}{more} (or lower --config.batch_size to {batch // factor}{more})")
  return (f"even one example per device and micro-batch (batch {batch} over {devices} devices, "
          f"{batch // devices} accumulation steps) does not fit; use a slice with more chips or "
          "a smaller --config.data.crop")
