"""Running `python -m big_transfer.main` in subprocesses, as users and cluster launchers do."""

import importlib.util
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def recipe_config(recipe: str):
  """`get_config(ARG)` of a recipe `configs/NAME.py[:ARG]` (relative to the repository), unlocked,
  as `--config=` loads it."""
  path, _, arg = recipe.partition(":")
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def scalars(workdir, tag: str) -> list[tuple[int, float]]:
  """(step, value) of every scalar `tag` a run wrote to its TensorBoard files in `workdir`."""
  import numpy as np  # noqa: PLC0415  (only the tests that read metrics need them)
  from tensorboard.backend.event_processing import event_accumulator  # noqa: PLC0415
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0})
  events.Reload()
  return [(e.step, float(np.asarray(e.tensor_proto.float_val or
                                    [np.frombuffer(e.tensor_proto.tensor_content, np.float32)[0]])[0]))
          for e in events.Tensors(tag)]


def env_with_devices(num_devices: int, **extra) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["PYTHONPATH"] = str(REPO)
  env.update({k: str(v) for k, v in extra.items()})
  return env


def main_args(workdir, data_dir, config="configs/demo.py:smoke", **overrides) -> list[str]:
  args = [sys.executable, "-m", "big_transfer.main", f"--config={REPO / config}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
  return args + [f"--config.{k}={v}" for k, v in overrides.items()]


def run_main(workdir, data_dir, num_devices=1, timeout=600, env=None, **overrides):
  """Runs the CLI to completion; returns the CompletedProcess (text output)."""
  return subprocess.run(main_args(workdir, data_dir, **overrides), cwd=REPO, text=True,
                        capture_output=True, timeout=timeout,
                        env=env or env_with_devices(num_devices))


def wait_for_step(proc: subprocess.Popen, step: int, timeout: float = 300) -> list[str]:
  """Reads a running program's log (`proc.stderr`) until it reports training step `step`;
  returns the lines read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stderr.readline()
    if not line:
      break
    lines.append(line)
    if f"] [{step}] train/" in line:
      return lines
  raise AssertionError(f"step {step} never reported:\n{''.join(lines[-30:])}")


def final_params(workdir):
  """The parameters of a run's latest checkpoint."""
  from big_transfer.training import checkpoints  # noqa: PLC0415  (JAX after conftest)
  return checkpoints.Checkpoints(workdir, every_steps=1, read_only=True).restore_params()


def assert_same_arrays(a, b) -> None:
  """Two trees hold the same number of arrays, equal bit for bit in order (the first's paths
  name a mismatch)."""
  import jax  # noqa: PLC0415  (JAX after conftest)
  import numpy as np  # noqa: PLC0415
  flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def assert_fails_in_one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
  """A user error: exit 1, no traceback, one `error:` line holding every fragment; returns it."""
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def assert_shellcheck_passes(*scripts, cwd=None) -> None:
  """Runs the `test` extra's shellcheck on `scripts` (paths) and fails with its findings."""
  shellcheck = shutil.which("shellcheck", path=str(pathlib.Path(sys.executable).parent))
  assert shellcheck, "shellcheck is missing: pip install -e '.[test]' provides it"
  result = subprocess.run([shellcheck, *map(str, scripts)], cwd=cwd, text=True,
                          capture_output=True, check=False)
  assert result.returncode == 0, result.stdout


def assert_container_command_passes_shellcheck(tmp_path, command: str) -> None:
  """The shell line a container runs (`sh -c COMMAND`), checked as a script of its own."""
  script = tmp_path / "start.sh"
  script.write_text("#!/bin/sh\n" + command + "\n")
  assert_shellcheck_passes(script)


needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu (pip install -e '.[tpu]') compiles for TPUs; it exists for x86-64 Linux only")


def forget_libtpu_variables(monkeypatch) -> None:
  """Removes again after the test the variables `topology_compile.compile_devices` sets for
  libtpu (setenv records their absence, which delenv of an absent variable would not)."""
  from big_transfer.launch import topology_compile, tpu_types  # noqa: PLC0415  (JAX after conftest)
  for variable in topology_compile.libtpu_environment(tpu_types.parse_slice("v5litepod-1")):
    monkeypatch.setenv(variable, "")
    monkeypatch.delenv(variable)
