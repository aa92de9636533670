"""Per-device memory of the real train step: pure data parallel beside FSDP, from XLA's analysis.

For each layout the step every run executes (`experiment.build(config)`, `steps.train`) is
lowered on abstract inputs (shapes, dtypes and shardings only: nothing is allocated) and
compiled, for `--devices` fake CPU devices or, with `--topology`, for the chips of a TPU slice as
libtpu's compiler describes them (no TPU needed, as the pre-flight does). The per-device bytes of
the parameters and the optimizer state follow from their shardings, the batch's from the batch
sharding, and the temporaries are `compiled.memory_analysis()`'s. The parameter, optimizer and
batch bytes are exact on any backend; the temporaries are the compiler's: the TPU compiler's are
what the chip will hold, XLA:CPU's only an estimate for an accelerator. XLA:CPU's barely show remat
(`benchmarks/residuals.py`), so each row adds the activations the backward pass keeps for one
device's micro-batch, counted from the program (`activations`, an upper bound on what a
compiler keeps); compiled for a TPU, the temporaries show what remat really saves.

    python -m benchmarks.memory --model=R152x4 --devices=8 --fsdp=8 [--batch=8] \
        [--resolution=224] [--precision=bf16] [--remat=none,unit,stage] [--no_compile] [--json]
    python -m benchmarks.memory --topology=v5litepod-8 --fsdp=8 ...   # the TPU compiler's bytes

Rows: data-parallel (mesh data=devices) and FSDP (data=devices/fsdp, fsdp=fsdp) for every
`--remat` policy given; the ratio line compares the first policy's two layouts.
"""

import argparse
import json
import os
import re
import time

from big_transfer import errors
from big_transfer.launch import tpu_types

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="R152x4")
  parser.add_argument("--devices", type=int, default=None,
                      help="fake CPU devices to compile for (default 8).")
  parser.add_argument("--topology", default=None,
                      help="compile for this TPU slice instead (v4-8, v5litepod-8, ...; needs "
                      "libtpu: pip install -e '.[tpu]').")
  parser.add_argument("--fsdp", type=int, default=8, help="size of the fsdp axis of the FSDP row.")
  parser.add_argument("--batch", type=int, default=8, help="examples per device per step.")
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--precision", choices=("bf16", "f32"), default="bf16")
  parser.add_argument("--grad_accum", type=int, default=1)
  parser.add_argument("--remat", default="none", help="comma-separated remat policies.")
  parser.add_argument("--device_memory_gib", type=float, default=None,
                      help="judge whether each layout fits a device of this many GiB.")
  parser.add_argument("--no_compile", action="store_true", help="only the exact parameter, "
                      "optimizer and batch bytes and the activations: no XLA compile (minutes for "
                      "the largest models on CPUs), so no temporaries or totals.")
  parser.add_argument("--json", action="store_true", help="print one JSON object.")
  args = parser.parse_args(argv)
  if args.topology:
    if args.devices is not None:
      parser.error("--devices and --topology both say how many devices: give one of them.")
    try:
      args.devices = tpu_types.parse_slice(args.topology).devices
    except errors.ConfigError as e:
      parser.error(f"--topology={args.topology}: {e}")
  elif args.devices is None:
    args.devices = 8
  if args.devices % args.fsdp:
    parser.error(f"--fsdp={args.fsdp} must divide --devices={args.devices}.")
  return args


def use_fake_devices(count: int) -> None:
  """Sets XLA_FLAGS for `count` CPU devices; must run before JAX is first imported."""
  flags = re.sub(DEVICE_COUNT_FLAG + r"=\S+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT_FLAG}={count}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"


def measure(args: argparse.Namespace) -> dict:
  # JAX reads XLA_FLAGS once, when its backend starts: imported only after `use_fake_devices`.
  import jax  # noqa: PLC0415

  from benchmarks import residuals, train_step  # noqa: PLC0415
  from big_transfer.launch import fit, topology_compile  # noqa: PLC0415
  from big_transfer.launch import preflight as launch_preflight  # noqa: PLC0415

  if args.topology:
    devices = topology_compile.compile_devices(tpu_types.parse_slice(args.topology))
  elif jax.device_count() != args.devices:
    raise RuntimeError(f"JAX sees {jax.device_count()} devices, not {args.devices}: it was "
                       "started before XLA_FLAGS was set.")
  else:
    devices = jax.devices()

  def row(layout: str, mesh_data: int, mesh_fsdp: int, remat: str) -> dict:
    step_args = train_step.parse_args([
        f"--model={args.model}", f"--resolution={args.resolution}", f"--batch={args.batch}",
        f"--precision={args.precision}", f"--mesh.data={mesh_data}", f"--mesh.fsdp={mesh_fsdp}",
        f"--grad_accum={args.grad_accum}", f"--remat={remat}"])
    exp = train_step.build_experiment(step_args, devices)
    state, batch_shapes = launch_preflight.abstract_inputs(exp)
    result = {
        "layout": layout, "remat": remat, "mesh": dict(exp.mesh.shape),
        "param_bytes": fit.bytes_per_device(state.params),
        "opt_state_bytes": fit.bytes_per_device(state.opt_state),
        "batch_bytes": fit.bytes_per_device(batch_shapes),
        "activation_bytes": residuals.activation_bytes(
            exp.model, exp.abstract_state.params, args.batch // args.grad_accum, args.resolution),
    }
    result["param_opt_bytes"] = result["param_bytes"] + result["opt_state_bytes"]
    if args.no_compile:
      return result
    start = time.perf_counter()
    lowered = exp.steps.train.lower(state, batch_shapes)
    lower_seconds = time.perf_counter() - start
    analysis = lowered.compile().memory_analysis()
    result.update({
        "temp_bytes": analysis.temp_size_in_bytes,
        "argument_bytes": analysis.argument_size_in_bytes,
        "output_bytes": analysis.output_size_in_bytes,
        "alias_bytes": analysis.alias_size_in_bytes,
        "total_bytes": fit.total_bytes(analysis),
        "lower_seconds": lower_seconds,
        "compile_seconds": time.perf_counter() - start - lower_seconds,
    })
    if args.device_memory_gib is not None:
      result["fits"] = result["total_bytes"] <= args.device_memory_gib * 2**30
    return result

  rows = []
  for remat in args.remat.split(","):
    rows.append(row("data-parallel", args.devices, 1, remat))
    # With --fsdp=1 both layouts are one mesh: compiled once.
    rows.append(row("fsdp", args.devices // args.fsdp, args.fsdp, remat) if args.fsdp > 1
                else dict(rows[-1], layout="fsdp"))
  return {
      "model": args.model, "devices": args.devices, "fsdp": args.fsdp,
      "batch_per_device": args.batch, "resolution": args.resolution,
      "precision": args.precision, "grad_accum": args.grad_accum,
      "device_memory_gib": args.device_memory_gib,
      "topology": args.topology,
      "platform_compiled_for": devices[0].platform,
      "device_kind": devices[0].device_kind,
      "jax": jax.__version__, "rows": rows,
      "ratio": rows[1]["param_opt_bytes"] / rows[0]["param_opt_bytes"],
  }


def report(result: dict) -> str:
  gib = lambda n: f"{n / 2**30:9.3f}"
  lines = [f"{result['model']} at {result['resolution']} px, {result['precision']}, batch "
           f"{result['batch_per_device']} per device, {result['devices']} "
           f"{'' if result['topology'] else 'fake '}{result['device_kind']} devices"
           f"{' (' + result['topology'] + ')' if result['topology'] else ''}; GiB per device:",
           f"{'layout':14s} {'remat':6s} {'params':>9s} {'opt':>9s} {'batch':>9s} {'temps':>9s} "
           f"{'total':>9s} {'activations':>11s}  compile"]
  for row in result["rows"]:
    fits = {True: "  fits", False: "  does not fit"}.get(row.get("fits"), "")
    compiled = "temp_bytes" in row
    temps = f"{gib(row['temp_bytes'])} {gib(row['total_bytes'])}" if compiled else (
        f"{'n/a':>9s} {'n/a':>9s}")
    seconds = (f"{row['lower_seconds'] + row['compile_seconds']:.0f} s" if compiled
               else "not compiled")
    lines.append(f"{row['layout']:14s} {row['remat']:6s} {gib(row['param_bytes'])} "
                 f"{gib(row['opt_state_bytes'])} {gib(row['batch_bytes'])} "
                 f"{temps}   {gib(row['activation_bytes'])}  {seconds}{fits}")
  lines.append(f"fsdp/data-parallel param+opt bytes = {result['ratio']:.2f}")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  use_fake_devices(1 if args.topology else args.devices)
  result = measure(args)
  print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
  main()
