"""Training throughput with the loop's window of steps in flight, against a window 6x as wide.

Runs the real sharded train step (the demo's R14x1 at 32 px, batch 32, on the local devices) on
an in-memory batch, in alternating rounds with `step_window.StepWindow()` (the train loop's
`MAX_STEPS_IN_FLIGHT`) and with a window of 24 steps, about as far ahead as XLA:CPU's 32 programs
per device allow, and reports the median ratio of the rounds' throughputs. Goal: >= 0.98, i.e.
the bound that keeps fake CPU devices from deadlocking costs no throughput.

    python -m benchmarks.steps_in_flight [--steps 100] [--rounds 5]
"""

import argparse
import time

import jax

from benchmarks import checkpoint_overhead
from big_transfer.training import step_window

WIDE_WINDOW = 24


def _images_per_second(exp, batch, num_steps: int, window_size: int) -> float:
  step = exp.steps.train
  state = exp.steps.create(jax.random.key(0))
  state, _ = step(state, batch)  # Compiled and warm before the clock starts.
  jax.block_until_ready(state)
  in_flight = step_window.StepWindow(window_size)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    in_flight.add(metrics)
  jax.block_until_ready(state)
  return num_steps * batch["image"].shape[0] / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--model", default="R14x1")
  parser.add_argument("--crop", type=int, default=32)
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args()
  exp, batch = checkpoint_overhead.setup(args.model, args.crop, args.batch)
  median = checkpoint_overhead.median_ratio(
      args.rounds,
      lambda: _images_per_second(exp, batch, args.steps, step_window.MAX_STEPS_IN_FLIGHT),
      lambda: _images_per_second(exp, batch, args.steps, WIDE_WINDOW),
      f"{step_window.MAX_STEPS_IN_FLIGHT} steps in flight", f"{WIDE_WINDOW} steps")
  print(f"{args.model} at {args.crop} px, batch {args.batch}, {jax.device_count()} device(s): "
        f"throughput with {step_window.MAX_STEPS_IN_FLIGHT} / {WIDE_WINDOW} steps in flight = "
        f"{median:.3f}, median of {args.rounds} rounds")


if __name__ == "__main__":
  main()
