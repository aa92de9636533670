"""GroupNorm forward and backward: ours (one pass for both moments) beside flax's two forms.

Three GroupNorms with BiT's 32 groups and eps 1e-5, each jitted as the gradient of a weighted
sum with respect to the input, the scale and the bias (the forward pass and the backward pass a
train step runs), on the same activations:

- ours, `models.resnetv2.GroupNorm`: the mean and mean square of the deviations from a shift (a
  value of the group) in one pass;
- flax two-pass, `nn.GroupNorm(use_fast_variance=False)`: the mean, then the mean squared
  deviation; what the model ran before (the precise form);
- flax fast, `nn.GroupNorm()` (flax's default, the train-step benchmark's reference): E[x^2] and
  E[x] in one pass, E[x^2] - E[x]^2.

Timed in alternating rounds; the median of each round's ratio is reported, ending with
`two-pass/ours = X.XX` (above 1: ours is faster). Precision: the largest error of each against
float64 on groups with mean 1e4 and spread 1, in units of the normalized output.

    python -m benchmarks.group_norm [--shape=B,H,W,C ...] [--dtype=bf16|f32] [--rounds=7] [--json]
"""

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_transfer.models import resnetv2

DTYPES = {"bf16": jnp.bfloat16, "f32": jnp.float32}
# R50x1's norms at 224 px, batch 8 per device: the first stage's 256 and its units' 64 channels.
DEFAULT_SHAPES = ("8,56,56,256", "8,56,56,64")


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", action="append", help="B,H,W,C of the activations; repeatable "
                      f"(default {' '.join(DEFAULT_SHAPES)}).")
  parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=10, help="calls per round and contender.")
  parser.add_argument("--json", action="store_true", help="print one JSON object.")
  args = parser.parse_args(argv)
  args.shape = [tuple(int(n) for n in s.split(",")) for s in args.shape or DEFAULT_SHAPES]
  for shape in args.shape:
    if len(shape) != 4 or shape[3] % resnetv2.GN_GROUPS:
      parser.error(f"--shape={','.join(map(str, shape))}: give B,H,W,C with C a multiple of "
                   f"{resnetv2.GN_GROUPS}.")
  return args


def contenders(dtype) -> dict[str, nn.Module]:
  flax_norm = lambda fast: nn.GroupNorm(num_groups=resnetv2.GN_GROUPS, epsilon=resnetv2.GN_EPSILON,
                                        dtype=dtype, use_fast_variance=fast)
  return {"ours": resnetv2.GroupNorm(dtype), "flax two-pass": flax_norm(False),
          "flax fast": flax_norm(True)}


def _forward_backward(norm: nn.Module):
  def weighted_sum(variables, x, weights):
    return jnp.sum(norm.apply(variables, x).astype(jnp.float32) * weights)
  return jax.jit(jax.grad(weighted_sum, argnums=(0, 1)))


def seconds_per_call(norms: dict, shape: tuple, dtype, rounds: int, steps: int) -> dict:
  """{name: [seconds per call, one per round]} for `norms` on random activations of `shape`."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape), dtype)
  weights = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  variables = norms["ours"].init(jax.random.key(0), x)
  calls = {name: _forward_backward(norm) for name, norm in norms.items()}
  for call in calls.values():
    jax.block_until_ready(call(variables, x, weights))  # Compiled and warm.
  seconds = {name: [] for name in calls}
  order = list(calls)
  for round_index in range(rounds):
    for name in order[::-1] if round_index % 2 else order:
      start = time.perf_counter()
      for _ in range(steps):
        out = calls[name](variables, x, weights)
      jax.block_until_ready(out)
      seconds[name].append((time.perf_counter() - start) / steps)
  return seconds


def group_norm_float64(x: np.ndarray) -> np.ndarray:
  """BiT's GroupNorm of x (B, H, W, C) in float64, with scale 1 and bias 0: the exact answer."""
  groups = x.astype(np.float64).reshape(*x.shape[:3], resnetv2.GN_GROUPS, -1)
  mean, var = groups.mean((1, 2, 4), keepdims=True), groups.var((1, 2, 4), keepdims=True)
  return ((groups - mean) / np.sqrt(var + resnetv2.GN_EPSILON)).reshape(x.shape)


def large_mean_error(norm: nn.Module) -> float:
  """Largest |error| against float64 of `norm` (float32) on groups of mean 1e4 and spread 1."""
  x = (1e4 + np.random.default_rng(1).standard_normal((2, 8, 8, 64))).astype(np.float32)
  got = np.asarray(norm.apply(norm.init(jax.random.key(0), x), x), np.float64)
  return float(np.max(np.abs(got - group_norm_float64(x))))


def measure(args: argparse.Namespace) -> dict:
  dtype = DTYPES[args.dtype]
  norms = contenders(dtype)
  rows = []
  for shape in args.shape:
    seconds = seconds_per_call(norms, shape, dtype, args.rounds, args.steps)
    rows.append({
        "shape": list(shape),
        "seconds": {name: statistics.median(s) for name, s in seconds.items()},
        "two_pass_over_ours": statistics.median(
            t / o for t, o in zip(seconds["flax two-pass"], seconds["ours"])),
        "fast_over_ours": statistics.median(
            f / o for f, o in zip(seconds["flax fast"], seconds["ours"])),
    })
  return {
      "dtype": args.dtype, "rounds": args.rounds, "steps_per_round": args.steps,
      "device_kind": jax.devices()[0].device_kind, "rows": rows,
      "large_mean_error": {name: large_mean_error(norm)
                           for name, norm in contenders(jnp.float32).items()},
      # Over all shapes: the median of the rows' ratios.
      "ratio": statistics.median(row["two_pass_over_ours"] for row in rows),
  }


def report(result: dict) -> str:
  lines = [f"GroupNorm forward+backward, {result['dtype']} activations, "
           f"{result['device_kind']}; median of {result['rounds']} rounds of "
           f"{result['steps_per_round']} calls"]
  for row in result["rows"]:
    times = ", ".join(f"{name} {s * 1e3:.2f} ms" for name, s in row["seconds"].items())
    lines.append(f"{'x'.join(map(str, row['shape']))}: {times}; two-pass/ours "
                 f"{row['two_pass_over_ours']:.2f}, fast/ours {row['fast_over_ours']:.2f}")
  lines.append("largest error against float64, groups of mean 1e4 and spread 1 (float32): " +
               ", ".join(f"{name} {e:.1e}" for name, e in result["large_mean_error"].items()))
  lines.append(f"two-pass/ours = {result['ratio']:.2f}")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  result = measure(args)
  print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
  main()
