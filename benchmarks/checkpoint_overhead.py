"""Training throughput with asynchronous checkpoints every k steps, against none, side by side.

Runs the real sharded train step (the demo's R14x1 at 32 px, batch 32, on the local devices) on
in-memory batches, so only the step and the checkpoints are measured. In alternating rounds it
times `--steps` steps without checkpoints and the same steps saving every `--every` steps with
`big_transfer.checkpoints.Checkpoints` (orbax, asynchronous), and reports the median ratio of
the rounds' throughputs. Goal: under 5% overhead at the demo's interval (every 100 steps).

    python -m benchmarks.checkpoint_overhead [--every 100] [--steps 200] [--rounds 3]
"""

import argparse
import functools
import tempfile
import time

import jax
import numpy as np

from big_transfer import checkpoints, models, optim, sharding, steps


def _setup(model_name: str, crop: int, batch_size: int):
  mesh = sharding.make_mesh()
  model = models.create(model_name, num_classes=90)
  optimizer = optim.make_optimizer(0.01, weight_decay=1e-4)
  create = functools.partial(steps.create_train_state, model=model, optimizer=optimizer,
                             image_shape=(crop, crop, 3))
  shardings = sharding.param_shardings(jax.eval_shape(create, jax.random.key(0)), mesh)
  init = jax.jit(create, out_shardings=shardings)
  step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=optimizer),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.uniform(-1, 1, (batch_size, crop, crop, 3)).astype(np.float32),
      "label": np.eye(90, dtype=np.float32)[rng.integers(0, 90, batch_size)]},
      sharding.batch_sharding(mesh))
  return init, step, batch


def _images_per_second(init, step, batch, num_steps: int, every: int | None) -> float:
  state = init(jax.random.key(0))
  state, _ = step(state, batch)  # Compiled and warm before the clock starts.
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as workdir:
    ckpts = checkpoints.Checkpoints(workdir, every_steps=every or 1)
    start = time.perf_counter()
    for i in range(1, num_steps + 1):
      state, _ = step(state, batch)
      if every and i % every == 0:
        ckpts.save(i, state, {"benchmark": True})
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
  init, step, batch = _setup(args.model, args.crop, args.batch)
  ratios = []
  for r in range(args.rounds):
    without = _images_per_second(init, step, batch, args.steps, None)
    with_ckpt = _images_per_second(init, step, batch, args.steps, args.every)
    ratios.append(with_ckpt / without)
    print(f"round {r}: no checkpoints {without:.1f} images/s, checkpoint every {args.every} "
          f"steps {with_ckpt:.1f} images/s, ratio {with_ckpt / without:.3f}")
  median = float(np.median(ratios))
  print(f"{args.model} at {args.crop} px, batch {args.batch}, {jax.device_count()} device(s): "
        f"throughput with checkpoints / without = {median:.3f} (overhead {1 - median:.1%}), "
        f"median of {args.rounds} rounds")


if __name__ == "__main__":
  main()
