"""Fault tolerance through the command line: preemption, kills, damaged checkpoints, init."""

import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli
from big_transfer import models
from big_transfer.training import checkpoints
from big_transfer.models import interop

TOTAL_STEPS = 12
RUN = {"total_steps": TOTAL_STEPS, "checkpoint_every_steps": 3, "log_every_steps": 1,
       "fewshot.shots": "()", "decay_fractions": "(0.6667,)"}


def _final_params(workdir):
  return checkpoints.Checkpoints(workdir, every_steps=1, read_only=True).restore_params()


def _saved_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _assert_same_params(a, b):
  flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_data_dir):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  result = cli.run_main(workdir, synthetic_data_dir, **RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  return _final_params(workdir)


def _start(workdir, data_dir):
  return subprocess.Popen(cli.main_args(workdir, data_dir, **RUN), cwd=cli.REPO, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=cli.env_with_devices(1))


def _wait_for_step(proc, step, timeout=300):
  """Reads the run's log until it reports training step `step`; returns the lines read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stderr.readline()
    if not line:
      break
    lines.append(line)
    if f"] [{step}] train/" in line:
      return lines
  raise AssertionError(f"step {step} never reported:\n{''.join(lines[-30:])}")


@pytest.mark.parametrize("after_step", [2, 7])
def test_sigterm_saves_and_the_same_command_resumes_exactly(tmp_path, synthetic_data_dir,
                                                            uninterrupted, after_step):
  proc = _start(tmp_path, synthetic_data_dir)
  _wait_for_step(proc, after_step)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  preempted_at = _saved_steps(tmp_path)[-1]
  assert after_step <= preempted_at < TOTAL_STEPS
  assert f"Preempted: saved the checkpoint at step {preempted_at}" in err
  resumed = cli.run_main(tmp_path, synthetic_data_dir, **RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from the checkpoint at step {preempted_at}" in resumed.stderr
  _assert_same_params(_final_params(tmp_path), uninterrupted)


def test_ctrl_c_saves_like_sigterm_and_the_same_command_resumes_exactly(tmp_path,
                                                                      synthetic_data_dir,
                                                                      uninterrupted):
  proc = _start(tmp_path, synthetic_data_dir)
  _wait_for_step(proc, 2)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  assert "KeyboardInterrupt" not in err and "Traceback" not in err, err[-3000:]
  stopped_at = _saved_steps(tmp_path)[-1]
  assert 2 <= stopped_at < TOTAL_STEPS
  assert (f"Interrupted (Ctrl-C): saved the checkpoint at step {stopped_at}; rerun the same "
          "command to resume.") in err
  resumed = cli.run_main(tmp_path, synthetic_data_dir, **RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from the checkpoint at step {stopped_at}" in resumed.stderr
  _assert_same_params(_final_params(tmp_path), uninterrupted)


def test_sigkill_loses_only_steps_since_the_last_checkpoint(tmp_path, synthetic_data_dir,
                                                            uninterrupted):
  proc = _start(tmp_path, synthetic_data_dir)
  _wait_for_step(proc, 8)
  proc.kill()
  proc.communicate(timeout=60)
  assert _saved_steps(tmp_path)[-1] in (3, 6)
  resumed = cli.run_main(tmp_path, synthetic_data_dir, **RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  _assert_same_params(_final_params(tmp_path), uninterrupted)


def test_damaged_latest_checkpoint_is_skipped_with_a_warning(tmp_path, synthetic_data_dir):
  first = cli.run_main(tmp_path, synthetic_data_dir, **dict(RUN, total_steps=6))
  assert first.returncode == 0, first.stderr[-3000:]
  assert _saved_steps(tmp_path) == [3, 6]
  for f in (tmp_path / "checkpoints" / "6" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  resumed = cli.run_main(tmp_path, synthetic_data_dir, **dict(RUN, total_steps=6))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Checkpoint {tmp_path}/checkpoints/6 is damaged" in resumed.stderr
  assert "Resuming from the checkpoint at step 3" in resumed.stderr
  assert len(list((tmp_path / "checkpoints").glob("6.damaged-*"))) == 1
  assert _saved_steps(tmp_path) == [3, 6]


def test_resuming_a_workdir_of_another_run_names_the_differences(tmp_path, synthetic_data_dir):
  first = cli.run_main(tmp_path, synthetic_data_dir, **dict(RUN, total_steps=3))
  assert first.returncode == 0, first.stderr[-3000:]
  other = cli.run_main(tmp_path, synthetic_data_dir, seed=7, **dict(RUN, total_steps=3))
  assert other.returncode == 1
  assert "error: The workdir holds checkpoints of a different run (seed: checkpoint has 0, " \
         "config has 7)" in other.stderr
  assert _saved_steps(tmp_path) == [3]


def test_fine_tuning_from_a_checkpoint_whose_head_fits_starts_from_a_zero_head(
    tmp_path, synthetic_data_dir):
  model = models.ResNetV2(depth=14, width=1, num_classes=90)  # The upstream set's 90 classes.
  params = model.init(jax.random.key(5), jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree.map(lambda p: p + 0.5, params)  # A non-zero head, to see it replaced.
  interop.save_bit_npz(params, tmp_path / "pretrained.npz")
  result = cli.run_main(tmp_path / "run", synthetic_data_dir, init=tmp_path / "pretrained.npz",
                        lr=1e-30, **dict(RUN, total_steps=3))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "re-initialized head/kernel: fine-tuning starts from a new head" in result.stderr
  final = _final_params(tmp_path / "run")
  # The new head starts at zero; a learning rate of 1e-30 leaves every weight where it began.
  np.testing.assert_allclose(final["head"]["kernel"], np.zeros((2048, 90)), atol=1e-25)
  np.testing.assert_allclose(final["block3_unit01"]["conv2"]["kernel"],
                             params["block3_unit01"]["conv2"]["kernel"], rtol=1e-6)
