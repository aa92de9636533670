"""Pre-flight: compiles a run's train step for a TPU slice on any machine, before paying for it.

    python -m big_transfer.preflight --config=configs/NAME.py[:ARGS] --topology=v5litepod-16 \\
        [--config.KEY=VALUE ...] [--mfu=0.4]

The step is the run's own: `experiment.build` with a mesh over the slice's devices as libtpu's
compiler describes them without the hardware (`jax.experimental.topologies`), lowered and
compiled ahead of time on abstract inputs. Per device it reports the bytes of the parameters and
optimizer state, of the batch and of XLA's temporaries, their total against the chip's HBM, the
FLOPs of a step, and the step time and images/s at an assumed utilization. Exit code 0: the run
fits; 1: it does not, or a setting is wrong, in one `error:` line that says what to change.
Needs libtpu (`pip install -e '.[tpu]'`), not a TPU; the data set need not be on this machine.
"""

import dataclasses
import functools
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging

from big_transfer import command_line, data, errors, sharding

from big_transfer.training import checkpoints

from big_transfer.training import experiment


from big_transfer.launch import tpu_types
from big_transfer.data import dataset_table

# The fraction of the peak rate a step is assumed to reach: a planning figure, printed with every
# estimate; the first steps of a real run measure it (images/s in the log).
DEFAULT_MFU = 0.4


# libtpu lays a slice out on hosts of 2x2x1 chips; a smaller slice is one host of its own size.
_HOST_BOUNDS = (2, 2, 1)


def dataset_info_without_data(config: ml_collections.ConfigDict) -> data.DatasetInfo:
  """Facts of a run's training data from `dataset_table` and `config.num_classes` alone.

  Raises a ConfigError when neither knows the number of classes.
  """
  facts = dataset_table.find(config.dataset)
  num_classes = config.num_classes or (facts.num_classes if facts else 0)
  if not num_classes:
    raise errors.ConfigError(
        f"The number of classes of data set {config.dataset!r} is not known without its data "
        "(big_transfer.data.dataset_table lists the sets it knows); set it with "
        "--config.num_classes=N.")
  crop = config.data.crop
  # Only the data pipeline and the HyperRule read the size, and a compile needs neither.
  return data.DatasetInfo(num_train_examples=facts.train_examples if facts else 0,
                          image_size=facts.image_size if facts else (crop, crop),
                          num_classes=num_classes, class_names=None)


def libtpu_environment(tpu_slice: tpu_types.Slice) -> dict[str, str]:
  """The variables `compile_devices` sets (where unset) for libtpu to compile for `tpu_slice`."""
  return {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_WORKER_HOSTNAMES": "localhost",
          "TPU_ACCELERATOR_TYPE": tpu_slice.accelerator_type}


def compile_devices(tpu_slice: tpu_types.Slice) -> list[jax.Device]:
  """The devices of `tpu_slice` as libtpu's compiler describes them, without TPU hardware."""
  try:
    import libtpu  # noqa: F401  (only whether it is installed matters)
    from jax.experimental import topologies
  except ImportError:
    raise errors.UserError("The pre-flight compiles with libtpu, which is not installed: "
                           "pip install -e '.[tpu]' (any x86-64 Linux machine; no TPU needed)."
                           ) from None
  # Compiling opens no chip, so several pre-flights may share a machine (libtpu otherwise locks
  # /tmp/libtpu_lockfile); naming this host as the only worker and the target as the accelerator
  # keeps libtpu from looking for a TPU VM's metadata and warning that there is none.
  for variable, value in libtpu_environment(tpu_slice).items():
    os.environ.setdefault(variable, value)
  shape = (*tpu_slice.shape, 1)[:3]
  options = {"chips_per_host_bounds": tuple(map(min, shape, _HOST_BOUNDS))}
  if tpu_slice.chip_config_name:
    options["chip_config_name"] = tpu_slice.chip_config_name
  try:
    return topologies.get_topology_desc(tpu_slice.jax_topology, "tpu", **options).devices
  except jax.errors.JaxRuntimeError as e:
    if not str(e).startswith("INVALID_ARGUMENT"):
      raise
    raise errors.ConfigError(f"libtpu has no TPU topology {tpu_slice.jax_topology}: {e}. Use an "
                             "accelerator type (v4-32, v5litepod-16) for a standard slice."
                             ) from None


def bytes_per_device(tree) -> int:
  """Bytes that one device holds of a tree of ShapeDtypeStructs with shardings."""
  return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(tree))


def abstract_inputs(exp: experiment.Experiment) -> tuple:
  """(state, batch) of the run's train step as ShapeDtypeStructs laid out as the run lays them.

  The batch is what `data.train_batches` yields: {"image": float32 (B, crop, crop, 3),
  "label": float32 (B, num_classes)}.
  """
  state = checkpoints.abstract_like(exp.abstract_state, exp.state_shardings)
  batch, crop = exp.config.batch_size, exp.input_cfg.crop
  sharded = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32, sharding=exp.batch_sharding)
  return state, {"image": sharded((batch, crop, crop, 3)),
                 "label": sharded((batch, exp.model.num_classes))}


@dataclasses.dataclass(frozen=True)
class Footprint:
  """Bytes that one device holds during a train step.

  Attributes:
    params: the parameters (float32).
    opt_state: the optimizer's state (the momentum).
    batch: the device's share of the batch.
    temporaries: XLA's scratch space: activations kept for the backward pass, gradients, ...;
      None when XLA refused to compile the step.
    total: what the compiled step holds at once: its inputs, the outputs not written over the
      donated state, the temporaries and the program itself; None likewise.
  """
  params: int
  opt_state: int
  batch: int
  temporaries: int | None = None
  total: int | None = None

  @property
  def state(self) -> int:
    return self.params + self.opt_state

  def breakdown(self) -> str:
    parts = [f"parameters + optimizer state {_size(self.state)}", f"batch {_size(self.batch)}"]
    if self.temporaries is not None:
      parts.append(f"temporaries {_size(self.temporaries)}")
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
    for size in range(fsdp + 1, devices + 1):
      if devices % size == 0 and footprint.state * fsdp / size <= hbm / 2:
        data_flag = "" if config.mesh.data == -1 else " --config.mesh.data=-1"
        return (f"split the parameters and optimizer state over more devices with "
                f"--config.mesh.fsdp={size}{data_flag} (about "
                f"{_size(footprint.state * fsdp // size)} per device)")
    return (f"even split over all {devices} devices the parameters and optimizer state need "
            f"about {_size(footprint.state * fsdp // devices)} per device; use a slice with more "
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


def _size(num_bytes: float) -> str:
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if num_bytes >= scale:
      return f"{num_bytes / scale:.2f} {unit}"
  return f"{num_bytes:.0f} B"


def _flops(count: float) -> str:
  for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if count >= scale:
      return f"{count / scale:.3g} {prefix}FLOP"
  return f"{count:.3g} FLOP"


def _duration(seconds: float) -> str:
  for unit, scale in (("s", 1), ("ms", 1e-3)):
    if seconds >= scale:
      return f"{seconds / scale:.3g} {unit}"
  return f"{seconds / 1e-6:.3g} us"


@dataclasses.dataclass(frozen=True)
class Estimate:
  """What a compiled train step needs of each device of a slice, and how fast it may run.

  Attributes:
    exp: the run.
    tpu_slice: the slice compiled for.
    footprint: bytes per device.
    flops: floating-point operations of one step on one device.
    compile_seconds: how long XLA took here.
    mfu: the assumed fraction of the peak rate.
  """
  exp: experiment.Experiment
  tpu_slice: tpu_types.Slice
  footprint: Footprint
  flops: float
  compile_seconds: float
  mfu: float

  @property
  def hbm(self) -> int:
    return self.tpu_slice.generation.hbm_bytes_per_device

  @property
  def fits(self) -> bool:
    return self.footprint.total <= self.hbm

  @property
  def step_seconds(self) -> float:
    return self.flops / (self.tpu_slice.generation.peak_bf16_flops_per_device * self.mfu)

  def report(self) -> str:
    """The report, one `name: value` per line."""
    exp, tpu_slice, footprint = self.exp, self.tpu_slice, self.footprint
    generation, batch = tpu_slice.generation, exp.config.batch_size
    devices, accum = tpu_slice.devices, exp.config.grad_accum_steps
    device = ("a device is a chip" if generation.devices_per_chip == 1 else
              f"a device is one of the {generation.devices_per_chip} TensorCores of a chip")
    mesh = " x ".join(f"{axis}={size}" for axis, size in exp.mesh.shape.items())
    lines = [
        f"run: {exp.config.model} ({exp.config.model_dtype}) at {exp.input_cfg.crop} px, "
        f"{exp.model.num_classes} classes, batch {batch} ({batch // (devices * accum)} per device "
        f"and micro-batch, grad_accum_steps {accum})",
        f"slice: {tpu_slice.accelerator_type} = JAX topology {tpu_slice.jax_topology}, "
        f"{tpu_slice.chips} chips, {devices} devices ({device}), mesh {mesh}",
        f"compile: {self.compile_seconds:.0f} s on this machine",
        "per device:",
        f"  parameters: {_size(footprint.params)}",
        f"  optimizer state: {_size(footprint.opt_state)}",
        f"  batch: {_size(footprint.batch)}",
        f"  temporaries: {_size(footprint.temporaries)}",
        f"  total: {_size(footprint.total)} of {_size(self.hbm)} HBM "
        f"({footprint.total / self.hbm:.1%})",
        f"  FLOPs per step: {_flops(self.flops)} ({_flops(self.flops * devices / batch)} per "
        "image)",
        f"  step time: {_duration(self.step_seconds)} at {self.mfu:.0%} of the "
        f"{generation.peak_bf16_flops_per_device / 1e12:g} TFLOP/s bf16 peak (--mfu)",
        f"images/s: {batch / self.step_seconds / tpu_slice.chips:,.0f} per chip, "
        f"{batch / self.step_seconds:,.0f} in all",
    ]
    if accum > 1:
      lines.append(f"note: XLA counts the accumulation loop once; FLOPs are its count x {accum}.")
    verdict = "fits" if self.fits else "does not fit"
    lines.append(f"{verdict}: {_size(footprint.total)} of {_size(self.hbm)} per device")
    return "\n".join(lines)

  def does_not_fit(self) -> str:
    """The one-line reason and the advice when the step does not fit."""
    return (f"{_run_name(self.exp)} does not fit {self.tpu_slice.accelerator_type}: it needs "
            f"{_size(self.footprint.total)} per device of {_size(self.hbm)} HBM "
            f"({self.footprint.breakdown()}); "
            f"{advice(self.footprint, self.hbm, dict(self.exp.mesh.shape), self.exp.config)}.")


def _run_name(exp: experiment.Experiment) -> str:
  return f"{exp.config.model} at {exp.input_cfg.crop} px with batch {exp.config.batch_size}"


def estimate(config: ml_collections.ConfigDict, topology: str,
             mfu: float = DEFAULT_MFU) -> Estimate:
  """Compiles the train step of `config` for `topology` (see `tpu_types.parse_slice`).

  Raises a ConfigError for a bad setting and for a step that cannot fit: parameters, optimizer
  state and batch alone over the HBM (found before compiling), or XLA out of memory.
  """
  if not 0 < mfu <= 1:
    raise errors.ConfigError(f"--mfu is a fraction of the peak rate in (0, 1], got {mfu}.")
  tpu_slice = tpu_types.parse_slice(topology)
  info = dataset_info_without_data(config)
  devices = compile_devices(tpu_slice)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
  exp = experiment.build(config, mesh=mesh, dataset_info=info)
  state, batch = abstract_inputs(exp)
  footprint = Footprint(params=bytes_per_device(state.params),
                        opt_state=bytes_per_device(state.opt_state),
                        batch=bytes_per_device(batch))
  hbm = tpu_slice.generation.hbm_bytes_per_device
  if footprint.state + footprint.batch > hbm:
    raise errors.ConfigError(
        f"{_run_name(exp)} does not fit {tpu_slice.accelerator_type}: the parameters, optimizer "
        f"state and batch alone need {_size(footprint.state + footprint.batch)} per device of "
        f"{_size(hbm)} HBM ({footprint.breakdown()}); "
        f"{advice(footprint, hbm, dict(mesh.shape), config)}.")
  logging.info("Compiling the train step for %s (%d devices); a large model takes minutes.",
               tpu_slice.jax_topology, tpu_slice.devices)
  start = time.perf_counter()
  try:
    compiled = exp.steps.train.lower(state, batch, *exp.frozen_inputs(abstract=True)).compile()
  except jax.errors.JaxRuntimeError as e:
    if not str(e).startswith("RESOURCE_EXHAUSTED"):
      raise
    xla_says = str(e).splitlines()[0].removeprefix("RESOURCE_EXHAUSTED: ").rstrip(".")
    raise errors.ConfigError(
        f"{_run_name(exp)} does not fit {tpu_slice.accelerator_type}: XLA ran out of memory "
        f"compiling the train step ({xla_says}; {footprint.breakdown()} per device); "
        f"{advice(footprint, hbm, dict(mesh.shape), config)}.") from None
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  footprint = dataclasses.replace(footprint, temporaries=memory.temp_size_in_bytes,
                                  total=total_bytes(memory))
  flops = experiment.train_step_flops(compiled, config.grad_accum_steps)
  return Estimate(exp, tpu_slice, footprint, flops, seconds, mfu)


def total_bytes(memory) -> int:
  """What a compiled step holds at once per device, from its `memory_analysis()`: inputs,
  outputs not written over the donated inputs (aliases), temporaries and the program."""
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes
          + memory.generated_code_size_in_bytes)


def run(config: ml_collections.ConfigDict, topology: str, mfu: float) -> int:
  """Prints the report; returns the exit code: 0 if the run fits, else 1 with one `error:`
  line."""
  try:
    result = estimate(config, topology, mfu)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(result.report())
  if not result.fits:
    print(f"error: {result.does_not_fit()}", file=sys.stderr)
    return 1
  return 0


def _define_flags() -> None:
  # Defined only when run as a program, so importing the library registers no flags.
  command_line.define_recipe_flag("configs/bit_s.py")
  flags.DEFINE_string("topology", None, "The TPU slice: an accelerator type as gcloud names it "
                      "(v4-32, v5litepod-16, v5p-128, v6e-64) or a JAX topology (v4:2x2x4, "
                      "v5e:4x4).")
  flags.DEFINE_float("mfu", DEFAULT_MFU, "Assumed model FLOPs utilization: the fraction of the "
                     "chip's peak bf16 rate a step achieves, for the step time.")
  flags.mark_flags_as_required(["config", "topology"])


def main(argv):
  command_line.refuse_positional_arguments(argv)
  # The compile targets the slice's devices; local accelerators stay untouched (a training job
  # may be using them).
  jax.config.update("jax_platforms", "cpu")
  args = flags.FLAGS
  sys.exit(run(args.config, args.topology, args.mfu))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=command_line.parse_flags)
