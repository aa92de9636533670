"""A run's train step compiled for a TPU slice on any machine, before paying for the slice.

The step is the run's own: `experiment.build` with a mesh over the slice's devices as libtpu's
compiler describes them without the hardware (`topology_compile`), lowered and compiled ahead of
time on abstract inputs. `estimate` gives, per device, the bytes of the parameters and optimizer
state, of the batch, of a distillation run's teachers and of XLA's temporaries, their total
against the chip's HBM (`fit`), the FLOPs of a step, and the step time and images/s at an
assumed utilization; `python -m big_transfer.preflight` prints it.
"""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from big_transfer import data, errors, sharding
from big_transfer.data import dataset_table
from big_transfer.launch import fit, topology_compile, tpu_types
from big_transfer.training import checkpoints, experiment

# The fraction of the peak rate a step is assumed to reach: a planning figure, printed with every
# estimate; the first steps of a real run measure it (images/s in the log).
DEFAULT_MFU = 0.4


def dataset_info_without_data(config: ml_collections.ConfigDict) -> data.DatasetInfo:
  """Facts of a run's training data from `dataset_table` (the standard transfer sets and the
  built-in `bit_synthetic`) and `config.num_classes` alone.

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


def _flops(count: float) -> str:
  return fit.in_units(count, tuple((f"{prefix}FLOP", scale) for prefix, scale in (
      ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1))), ".3g")


def _duration(seconds: float) -> str:
  return fit.in_units(seconds, (("s", 1), ("ms", 1e-3), ("us", 1e-6)), ".3g")


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
  footprint: fit.Footprint
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
    exp, tpu_slice, footprint, size = self.exp, self.tpu_slice, self.footprint, fit.size
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
        f"  parameters: {size(footprint.params)}",
        f"  optimizer state: {size(footprint.opt_state)}",
        f"  batch: {size(footprint.batch)}",
        *([f"  teacher parameters: {size(footprint.teacher)}"] if footprint.teacher else []),
        f"  temporaries: {size(footprint.temporaries)}",
        f"  total: {size(footprint.total)} of {size(self.hbm)} HBM "
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
    lines.append(f"{verdict}: {size(footprint.total)} of {size(self.hbm)} per device")
    return "\n".join(lines)

  def does_not_fit(self) -> str:
    """The one-line reason and the advice when the step does not fit."""
    return (f"{_run_name(self.exp)} does not fit {self.tpu_slice.accelerator_type}: it needs "
            f"{fit.size(self.footprint.total)} per device of {fit.size(self.hbm)} HBM "
            f"({self.footprint.breakdown()}); "
            f"{fit.advice(self.footprint, self.hbm, dict(self.exp.mesh.shape), self.exp.config)}.")


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
  devices = topology_compile.compile_devices(tpu_slice)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
  exp = experiment.build(config, mesh=mesh, dataset_info=info)
  state, batch = abstract_inputs(exp)
  frozen = exp.frozen_inputs(abstract=True)
  footprint = fit.Footprint(params=fit.bytes_per_device(state.params),
                            opt_state=fit.bytes_per_device(state.opt_state),
                            batch=fit.bytes_per_device(batch),
                            teacher=fit.bytes_per_device(frozen))
  hbm = tpu_slice.generation.hbm_bytes_per_device
  if footprint.state + footprint.batch > hbm:
    raise errors.ConfigError(
        f"{_run_name(exp)} does not fit {tpu_slice.accelerator_type}: the parameters, optimizer "
        f"state and batch alone need {fit.size(footprint.state + footprint.batch)} per device of "
        f"{fit.size(hbm)} HBM ({footprint.breakdown()}); "
        f"{fit.advice(footprint, hbm, dict(mesh.shape), config)}.")
  logging.info("Compiling the train step for %s (%d devices); a large model takes minutes.",
               tpu_slice.jax_topology, tpu_slice.devices)
  start = time.perf_counter()
  try:
    compiled = exp.steps.train.lower(state, batch, *frozen).compile()
  except jax.errors.JaxRuntimeError as e:
    if not str(e).startswith("RESOURCE_EXHAUSTED"):
      raise
    xla_says = str(e).splitlines()[0].removeprefix("RESOURCE_EXHAUSTED: ").rstrip(".")
    raise errors.ConfigError(
        f"{_run_name(exp)} does not fit {tpu_slice.accelerator_type}: XLA ran out of memory "
        f"compiling the train step ({xla_says}; {footprint.breakdown()} per device); "
        f"{fit.advice(footprint, hbm, dict(mesh.shape), config)}.") from None
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  footprint = dataclasses.replace(footprint, temporaries=memory.temp_size_in_bytes,
                                  total=fit.total_bytes(memory))
  flops = experiment.train_step_flops(compiled, config.grad_accum_steps)
  return Estimate(exp, tpu_slice, footprint, flops, seconds, mfu)
