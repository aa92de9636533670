"""Train-step throughput of the real step, side by side with a straightforward reference.

Ours is the step every run executes: `experiment.build(config)` from `config.base()` with the
model, resolution, batch, precision, mesh and accumulation given here, then `steps.train`
(sharded state, donated). The reference (`benchmarks/reference_step.py`) is the same network
written plainly with `nn.GroupNorm`, a standardize-in-`__call__` convolution, flax's TrainState
and optax SGD with momentum, on the same mesh, shapes, dtypes and random batch (already on the
devices, so only the step is timed). Both are compiled before any timing (`compile_seconds`),
warmed up, then timed in alternating rounds (ours first in even rounds, the reference first in
odd ones); each round gives a ratio and the median round is reported, which tolerates a shared,
noisy machine. FLOPs per step come from XLA's cost analysis of the compiled step; MFU is printed
where the device's peak is known (`benchmarks/device_peaks.py`).

    python -m benchmarks.train_step --model=R50x1 --resolution=224 --batch=128 --precision=bf16
    python -m benchmarks.train_step --model=R50x1 --resolution=64 --batch=32 --precision=f32 \
        [--mesh.data=-1 --mesh.fsdp=1] [--grad_accum=K] [--pipeline=jpegs] [--json]

`--batch` is per device per optimizer step (the global batch is batch x devices). With
`--pipeline=jpegs` (ImageNet-sized JPEGs written to a temporary folder) or `--pipeline=DATASET`
(a TFDS name or folder:/path), the input pipeline's own images/s (`data.train_batches`, same
resolution and global batch) is printed beside the step's. It imports TensorFlow only for
`--pipeline`: the step and its reference run where only JAX is installed.
"""

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import jax
import numpy as np

from benchmarks import device_peaks, reference_step
from big_transfer import data, models, sharding
from big_transfer.recipes import schema as config_lib
from big_transfer.training import experiment, step_window

PRECISIONS = {"bf16": "bfloat16", "f32": "float32"}
NUM_CLASSES = 1000


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="R50x1", help="R<depth>x<width>, e.g. R50x1, R14x1.")
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--batch", type=int, default=32, help="examples per device per step.")
  parser.add_argument("--precision", choices=sorted(PRECISIONS), default="f32")
  parser.add_argument("--mesh.data", dest="mesh_data", type=int, default=-1)
  parser.add_argument("--mesh.fsdp", dest="mesh_fsdp", type=int, default=1)
  parser.add_argument("--grad_accum", type=int, default=1)
  parser.add_argument("--remat", choices=models.REMAT_POLICIES, default="none")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round and step.")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling.")
  parser.add_argument("--no_reference", action="store_true", help="time ours alone.")
  parser.add_argument("--pipeline", default="", help="'jpegs', a TFDS name or folder:/path: "
                      "also time the input pipeline alone at this resolution and batch.")
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir for --pipeline.")
  parser.add_argument("--json", action="store_true", help="print one JSON object.")
  args = parser.parse_args(argv)
  return args


def run_config(args: argparse.Namespace, num_devices: int):
  """The run config of the measured step: `config.base()` with this benchmark's overrides."""
  config = config_lib.base()
  config.model = args.model
  config.model_dtype = PRECISIONS[args.precision]
  config.remat = args.remat
  config.num_classes = NUM_CLASSES
  config.data.crop = args.resolution
  config.batch_size = args.batch * num_devices
  config.grad_accum_steps = args.grad_accum
  config.mesh.data = args.mesh_data
  config.mesh.fsdp = args.mesh_fsdp
  config.weight_decay = 1e-4
  return config


def random_batch(global_batch: int, resolution: int, sharding, seed: int = 0) -> dict:
  """{"image": (B, R, R, 3) in [-1, 1], "label": (B, 1000) one-hot}, placed on the devices."""
  rng = np.random.default_rng(seed)
  return jax.device_put({
      "image": rng.uniform(-1, 1, (global_batch, resolution, resolution, 3)).astype(np.float32),
      "label": np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, global_batch)]},
      sharding)


@dataclasses.dataclass
class Timed:
  """A compiled step and the state it threads through the timed steps."""
  name: str
  step: object
  state: object
  compile_seconds: float
  flops_per_device: float
  temp_bytes_per_device: int

  def run(self, batch: dict, num_steps: int) -> float:
    """Seconds for `num_steps` steps, from dispatch of the first to completion of the last."""
    in_flight = step_window.StepWindow()  # As the train loop: XLA:CPU's fake devices need it.
    start = time.perf_counter()
    for _ in range(num_steps):
      self.state, metrics = self.step(self.state, batch)
      in_flight.add(metrics)
    jax.block_until_ready(self.state)
    return time.perf_counter() - start


def compile_step(name: str, jitted, state, batch, grad_accum_steps: int) -> Timed:
  start = time.perf_counter()
  compiled = jitted.lower(state, batch).compile()
  seconds = time.perf_counter() - start
  # Counted as the pre-flight counts them: the accumulation loop's body times its trips.
  return Timed(name, compiled, state, seconds,
               float(experiment.train_step_flops(compiled, grad_accum_steps)),
               compiled.memory_analysis().temp_size_in_bytes)


def build_experiment(args: argparse.Namespace, devices=None) -> experiment.Experiment:
  """The measured run resolved (`experiment.build`) without reading data, on `devices` (by
  default the job's)."""
  info = data.DatasetInfo(num_train_examples=1_281_167, image_size=(args.resolution,) * 2,
                          num_classes=NUM_CLASSES, class_names=None)
  config = run_config(args, jax.device_count() if devices is None else len(devices))
  mesh = None if devices is None else sharding.make_mesh(
      config.mesh.data, config.mesh.fsdp, devices=devices)
  return experiment.build(config, mesh=mesh, dataset_info=info)


def compile_run_step(name: str, exp: experiment.Experiment, batch: dict) -> Timed:
  """The train step of `exp`, compiled, with a fresh state."""
  return compile_step(name, exp.steps.train, exp.steps.create(jax.random.key(0)), batch,
                      exp.config.grad_accum_steps)


def build_ours(args: argparse.Namespace):
  exp = build_experiment(args)
  batch = random_batch(exp.config.batch_size, args.resolution, exp.batch_sharding)
  return exp, batch, compile_run_step("ours", exp, batch)


def build_reference(args: argparse.Namespace, exp: experiment.Experiment, batch: dict) -> Timed:
  create, step, _, _ = reference_step.build(args.model, NUM_CLASSES, models.dtype_named(
      PRECISIONS[args.precision]), (args.resolution, args.resolution, 3), exp.mesh,
      args.grad_accum)
  return compile_step("reference", step, create(jax.random.key(0)), batch,
                      args.grad_accum)


def pipeline_images_per_sec(args: argparse.Namespace, global_batch: int, batches: int = 10
                            ) -> float:
  """Images/s of `data.train_batches` alone (upstream recipe, this resolution and batch)."""
  with tempfile.TemporaryDirectory() as folder:
    dataset = args.pipeline
    if dataset == "jpegs":
      from benchmarks import input_pipeline  # noqa: PLC0415  (TensorFlow image writing)
      input_pipeline.write_jpegs(folder, 300)
      dataset = f"folder:{folder}"
    cfg = data.InputConfig(dataset=dataset, data_dir=args.data_dir, crop=args.resolution,
                           shuffle_buffer=1000)
    data.dataset_info(cfg)  # Prepares or checks the data once, outside the timing.
    stream = data.train_batches(cfg, global_batch, seed=0)
    for _ in range(3):  # Thread pools and autotuning.
      next(stream)
    start = time.perf_counter()
    for _ in range(batches):
      next(stream)
    return batches * global_batch / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict:
  num_devices = jax.device_count()
  exp, batch, ours = build_ours(args)
  contenders = [ours] if args.no_reference else [ours, build_reference(args, exp, batch)]
  for contender in contenders:
    contender.run(batch, args.warmup)
  seconds = {c.name: [] for c in contenders}
  for round_index in range(args.rounds):
    for contender in contenders[::-1] if round_index % 2 else contenders:
      seconds[contender.name].append(contender.run(batch, args.steps) / args.steps)
  global_batch = exp.config.batch_size
  step_seconds = statistics.median(seconds["ours"])
  device_kind = jax.devices()[0].device_kind
  peak = device_peaks.peak_flops_per_device(device_kind, args.precision)
  result = {
      "model": args.model, "resolution": args.resolution, "precision": args.precision,
      "batch_per_device": args.batch, "global_batch": global_batch, "grad_accum": args.grad_accum,
      "remat": args.remat, "mesh": dict(exp.mesh.shape), "devices": num_devices,
      "device_kind": device_kind, "platform": jax.devices()[0].platform,
      "step_seconds": step_seconds,
      "images_per_sec": global_batch / step_seconds / num_devices,
      "images_per_sec_total": global_batch / step_seconds,
      "compile_seconds": ours.compile_seconds,
      "flops_per_step": ours.flops_per_device * num_devices,
      "flops_per_step_per_device": ours.flops_per_device,
      "peak_flops_per_device": peak,
      "mfu": ours.flops_per_device / step_seconds / peak if peak else None,
      "temp_bytes_per_device": ours.temp_bytes_per_device,
      "rounds": args.rounds, "steps_per_round": args.steps,
  }
  if not args.no_reference:
    reference = contenders[1]
    ratios = [r / o for o, r in zip(seconds["ours"], seconds["reference"])]
    ref_seconds = statistics.median(seconds["reference"])
    result.update({
        "reference_step_seconds": ref_seconds,
        "reference_images_per_sec": global_batch / ref_seconds / num_devices,
        "reference_compile_seconds": reference.compile_seconds,
        "reference_flops_per_step": reference.flops_per_device * num_devices,
        "reference_mfu": reference.flops_per_device / ref_seconds / peak if peak else None,
        "reference_temp_bytes_per_device": reference.temp_bytes_per_device,
        "round_ratios": ratios,
        "ratio": statistics.median(ratios),
    })
  if args.pipeline:
    result["pipeline"] = args.pipeline
    result["pipeline_images_per_sec_total"] = pipeline_images_per_sec(args, global_batch)
  return result


def report(result: dict) -> str:
  """The human-readable summary; the ratio line last."""
  mfu = lambda value: f"{value:.1%}" if value is not None else "n/a (peak unknown)"
  lines = [
      f"{result['model']} at {result['resolution']} px, {result['precision']}, batch "
      f"{result['batch_per_device']} per device x {result['devices']} {result['device_kind']} "
      f"device(s), mesh {result['mesh']}, grad_accum {result['grad_accum']}, remat "
      f"{result['remat']}; median of {result['rounds']} rounds of {result['steps_per_round']} "
      "steps",
      f"ours:      {result['images_per_sec']:10.1f} images/s per device, step "
      f"{result['step_seconds'] * 1e3:8.1f} ms, compile {result['compile_seconds']:.1f} s, "
      f"{result['flops_per_step'] / 1e9:.1f} GFLOP/step, MFU {mfu(result['mfu'])}, "
      f"temporaries {result['temp_bytes_per_device'] / 2**30:.2f} GiB per device",
  ]
  if "ratio" in result:
    lines.append(
        f"reference: {result['reference_images_per_sec']:10.1f} images/s per device, step "
        f"{result['reference_step_seconds'] * 1e3:8.1f} ms, compile "
        f"{result['reference_compile_seconds']:.1f} s, "
        f"{result['reference_flops_per_step'] / 1e9:.1f} GFLOP/step, MFU "
        f"{mfu(result['reference_mfu'])}, temporaries "
        f"{result['reference_temp_bytes_per_device'] / 2**30:.2f} GiB per device")
    lines.append("round ratios: " + " ".join(f"{r:.3f}" for r in result["round_ratios"]))
  if "pipeline_images_per_sec_total" in result:
    lines.append(f"input pipeline ({result['pipeline']}) alone: "
                 f"{result['pipeline_images_per_sec_total']:.1f} images/s on this host; the "
                 f"step consumes {result['images_per_sec_total']:.1f} images/s")
  if "ratio" in result:
    lines.append(f"ours/reference = {result['ratio']:.2f}")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  result = measure(args)
  print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
  main()
