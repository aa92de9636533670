"""Time to a sweep member's first step with an empty and with a filled compilation cache.

A sweep gives its members one JAX persistent compilation cache (big_transfer.sweep.runner), so
only the first member of each program compiles. This runs one member of the demo's smoke sweep
(`configs/sweeps/demo.py:smoke`, from scratch: no upstream run needed) as the sweep would, in
alternating rounds: into a fresh workdir with a fresh, empty cache directory (cold), then into
another fresh workdir with the cache that run filled (warm). It reports each run's
`seconds_to_first_step` (summary.json: setup, compilation and one step) and the median ratio
cold / warm over the rounds.

    python -m benchmarks.sweep_compilation_cache [--rounds 2] [--data_dir DIR]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from big_transfer import data
from big_transfer.sweep import runner, spec

_MEMBER = "examples_per_class=5,init=scratch,seed=0"


def _first_step_seconds(member: spec.Member, workdir: str, cache_dir: str) -> float:
  env = dict(runner.member_env(workdir), JAX_COMPILATION_CACHE_DIR=cache_dir)
  subprocess.run(member.command(workdir, sys.executable), check=True, env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  with open(os.path.join(workdir, member.name, runner.SUMMARY)) as f:
    return json.load(f)["seconds_to_first_step"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: a fresh one).")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = args.data_dir or os.path.join(scratch, "tfds")
    data.dataset_info(data.InputConfig(dataset="bit_synthetic/downstream", data_dir=data_dir))
    sweep = spec.load("configs/sweeps/demo.py:smoke")
    [member] = [m for m in spec.expand(sweep, {"data_dir": data_dir}) if m.name == _MEMBER]
    ratios = []
    for round_index in range(args.rounds):
      cache = os.path.join(scratch, f"cache{round_index}")
      cold = _first_step_seconds(member, os.path.join(scratch, f"cold{round_index}"), cache)
      warm = _first_step_seconds(member, os.path.join(scratch, f"warm{round_index}"), cache)
      ratios.append(cold / warm)
      print(f"round {round_index + 1}: empty cache {cold:.1f} s, filled cache {warm:.1f} s to "
            f"the first step (x{cold / warm:.2f})", flush=True)
  print(f"median over {args.rounds} rounds: the first step comes "
        f"x{statistics.median(ratios):.2f} sooner with the sweep's filled cache")


if __name__ == "__main__":
  main()
