"""Training throughput with asynchronous checkpoints every k steps, against none, side by side.

Runs the real sharded train step (the demo's R14x1 at 32 px, batch 32, on the local devices) on
in-memory batches, so only the step and the checkpoints are measured. In alternating rounds it
times `--steps` steps without checkpoints and the same steps saving every `--every` steps with
`big_transfer.training.checkpoints.Checkpoints` (orbax, asynchronous), and reports the median ratio of
the rounds' throughputs. Goal: under 5% overhead at the demo's interval (every 100 steps).

    python -m benchmarks.checkpoint_overhead [--every 100] [--steps 200] [--rounds 3]
"""

import argparse
import tempfile
import time

import jax
import numpy as np

from big_transfer import data
from big_transfer.training import checkpoints, experiment, step_window
from configs import demo


def setup(model_name: str, crop: int, batch_size: int):
  """The demo recipe resolved (`experiment.build`, as train.py runs it) with `model_name` at
  `crop` px and `batch_size`, and one batch on the devices."""
  config = demo.get_config()
  config.model = model_name if "-" in model_name else f"BiT-S-{model_name}"
  config.data.crop = crop
  config.batch_size = batch_size
  num_classes = 90
  exp = experiment.build(config, dataset_info=data.DatasetInfo(
      num_train_examples=10_000, image_size=(crop, crop), num_classes=num_classes,
      class_names=None))
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.uniform(-1, 1, (batch_size, crop, crop, 3)).astype(np.float32),
      "label": np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, batch_size)]},
      exp.batch_sharding)
  return exp, batch


def median_ratio(rounds: int, ours, baseline, ours_name: str, baseline_name: str) -> float:
  """Alternates `ours()` and `baseline()` (each returning images/s) for `rounds` rounds, prints
  each round, and returns the median of the rounds' ratios ours/baseline."""
  ratios = []
  for r in range(rounds):
    mine, base = ours(), baseline()
    ratios.append(mine / base)
    print(f"round {r}: {ours_name} {mine:.1f} images/s, {baseline_name} {base:.1f} images/s, "
          f"ratio {mine / base:.3f}")
  return float(np.median(ratios))


def _images_per_second(exp, batch, num_steps: int, every: int | None) -> float:
  step = exp.steps.train
  state = exp.steps.create(jax.random.key(0))
  state, _ = step(state, batch)  # Compiled and warm before the clock starts.
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as workdir:
    ckpts = checkpoints.Checkpoints(workdir, every_steps=every or 1)
    in_flight = step_window.StepWindow()  # As the train loop does: fake devices deadlock without.
    start = time.perf_counter()
    for i in range(1, num_steps + 1):
      state, metrics = step(state, batch)
      in_flight.add(metrics)
      if every and i % every == 0:
        ckpts.save(i, state, exp.record)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    ckpts.wait()  # Not timed: the run goes on while this would still be writing.
    ckpts.close()
  return num_steps * batch["image"].shape[0] / elapsed


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--every", type=int, default=100)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--model", default="R14x1")
  parser.add_argument("--crop", type=int, default=32)
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args()
  exp, batch = setup(args.model, args.crop, args.batch)
  median = median_ratio(
      args.rounds, lambda: _images_per_second(exp, batch, args.steps, args.every),
      lambda: _images_per_second(exp, batch, args.steps, None),
      f"checkpoint every {args.every} steps", "no checkpoints")
  print(f"{args.model} at {args.crop} px, batch {args.batch}, {jax.device_count()} device(s): "
        f"throughput with checkpoints / without = {median:.3f} (overhead {1 - median:.1%}), "
        f"median of {args.rounds} rounds")


if __name__ == "__main__":
  main()
