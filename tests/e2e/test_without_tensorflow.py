"""The compute core runs where only JAX is installed (a GPU machine without TensorFlow): the model,
the step, the optimizer, sharding, the experiment built from a config, checkpoints and the step
benchmark import and run with TensorFlow, TFDS and clu made unimportable. The benchmark's
figures and report are checked here too (tests/unit/test_benchmarks.py has the other benchmarks)."""

import json
import subprocess
import sys

import pytest

import cli

# Runs in a fresh interpreter: `None` in sys.modules makes `import tensorflow` (and the others)
# raise ImportError, as on a machine that lacks them.
SCRIPT = r"""
import sys
for name in ("tensorflow", "tensorflow_datasets", "clu"):
  sys.modules[name] = None

import json
import jax
import numpy as np

from benchmarks import train_step
from big_transfer.training import checkpoints

# The run is the one the step benchmark measures (`experiment.build` from `config.base()` with
# the benchmark's overrides), so its train step is the very program the benchmark compiles next:
# XLA compiles it once and the persistent cache serves the second time.
args = train_step.parse_args(
    ["--model=R14x1", "--resolution=16", "--batch=2", "--precision=f32", "--mesh.fsdp=2",
     "--steps=1", "--rounds=3", "--warmup=1"])
exp = train_step.build_experiment(args)
state = exp.steps.create(jax.random.key(0))
batch = train_step.random_batch(exp.config.batch_size, args.resolution, exp.batch_sharding)
state, metrics = exp.steps.train(state, batch)
saver = checkpoints.Checkpoints(sys.argv[1], every_steps=1)
saver.save(1, state, exp.record, force=True)
saver.wait()
restored, _, _ = saver.restore(checkpoints.abstract_like(state, exp.state_shardings))
saver.close()
same = jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), state.params,
                                 restored.params))

bench = train_step.measure(args)
print(json.dumps({"devices": len(jax.devices()), "mesh": dict(exp.mesh.shape),
                  "loss": float(metrics["loss"]), "restored_equal": same,
                  "loaded": sorted(m for m in ("tensorflow", "tensorflow_datasets", "clu")
                                   if sys.modules.get(m) is not None),
                  "device_kind": jax.devices()[0].device_kind,
                  "bench": bench, "report": train_step.report(bench)}))
"""


def test_a_sharded_step_checkpoint_and_the_step_benchmark_run_without_tensorflow(tmp_path):
  done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "workdir")],
                        env=cli.env_with_devices(4), cwd=cli.REPO, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4 and result["mesh"] == {"data": 2, "fsdp": 2}
  assert result["loss"] > 0 and result["restored_equal"] and result["loaded"] == []
  # The step benchmark, also what it reports (one run serves both: each compile costs ~20 s).
  bench, devices = result["bench"], result["devices"]
  assert bench["device_kind"] == result["device_kind"]
  assert bench["global_batch"] == 2 * devices
  assert bench["images_per_sec"] == pytest.approx(
      bench["global_batch"] / bench["step_seconds"] / devices)
  assert bench["reference_images_per_sec"] == pytest.approx(
      bench["global_batch"] / bench["reference_step_seconds"] / devices)
  assert len(bench["round_ratios"]) == 3
  assert bench["ratio"] == pytest.approx(sorted(bench["round_ratios"])[1])
  assert bench["compile_seconds"] > 0 and bench["reference_compile_seconds"] > 0
  # Same network and batch; our step also does work the reference leaves out (weight decay,
  # the gradient norm and non-finite guard), which at 16 px weighs against the convolutions.
  assert bench["flops_per_step"] >= bench["reference_flops_per_step"] > 0
  assert bench["mfu"] is None  # No known peak for a CPU.
  lines = result["report"].splitlines()
  assert lines[1].startswith("ours:") and "images/s per device" in lines[1]
  assert lines[2].startswith("reference:")
  assert lines[-1] == f"ours/reference = {bench['ratio']:.2f}"
