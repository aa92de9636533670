"""Fault tolerance through the command line: preemption, Ctrl-C, kills, init. (A damaged checkpoint
and a resume of another run: test_bad_input.py, on its shared finished run.)"""

import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli
from big_transfer import models
from big_transfer.launch import workdir_hold
from big_transfer.models import interop

TOTAL_STEPS = 12
RUN = {"total_steps": TOTAL_STEPS, "checkpoint_every_steps": 3, "log_every_steps": 1,
       "fewshot.shots": "()", "decay_fractions": "(0.6667,)"}


def _saved_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_data_dir):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  result = cli.run_main(workdir, synthetic_data_dir, **RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  return cli.final_params(workdir)


def _start(workdir, data_dir):
  return subprocess.Popen(cli.main_args(workdir, data_dir, **RUN), cwd=cli.REPO, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=cli.env_with_devices(1))


def test_ctrl_c_then_sigterm_save_release_the_hold_and_the_same_command_resumes_exactly(
    tmp_path, synthetic_data_dir, uninterrupted):
  # Ctrl-C stops like a preemption. The second run resumes from the first's checkpoint and is
  # preempted in turn; the third finishes, with the weights of a run never stopped.
  signals = [
      (signal.SIGINT, 2, "Interrupted (Ctrl-C): saved the checkpoint at step {step}; rerun the "
                         "same command to resume."),
      (signal.SIGTERM, 7, "Preempted: saved the checkpoint at step {step}"),
  ]
  stopped_at = None
  for sent, after_step, line in signals:
    proc = _start(tmp_path, synthetic_data_dir)
    started = "".join(cli.wait_for_step(proc, after_step))
    if stopped_at is not None:
      assert f"Resuming from the checkpoint at step {stopped_at}" in started
    assert workdir_hold.read(tmp_path).pid == proc.pid
    proc.send_signal(sent)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "HOLD").exists()  # Released on the way out.
    stopped_at = _saved_steps(tmp_path)[-1]
    assert after_step <= stopped_at < TOTAL_STEPS
    assert line.format(step=stopped_at) in err
  resumed = cli.run_main(tmp_path, synthetic_data_dir, **RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from the checkpoint at step {stopped_at}" in resumed.stderr
  cli.assert_same_arrays(cli.final_params(tmp_path), uninterrupted)


def test_ctrl_c_before_training_stops_in_one_line_with_exit_130(tmp_path):
  # An empty data_dir: the built-in data set is generated first, for seconds, before training.
  proc = subprocess.Popen(cli.main_args(tmp_path / "run", tmp_path / "tfds", **RUN),
                          cwd=cli.REPO, text=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=cli.env_with_devices(1))
  for line in proc.stderr:
    if "Generating the built-in data set bit_synthetic/upstream" in line:
      break
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-3000:]
  assert "KeyboardInterrupt" not in err and "Traceback" not in err, err[-3000:]
  assert err.splitlines()[-1] == (
      "Interrupted (Ctrl-C) while setting up the run, before it trained: the workdir's "
      "checkpoints are as they were; rerun the same command to start or resume.")
  assert not list((tmp_path / "run").iterdir())  # No hold left, no checkpoint.
  # TFDS removed its half-written data set, so a rerun generates it again.
  assert not [p for p in (tmp_path / "tfds").rglob("*") if "incomplete" in p.name]
  assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))


def test_sigkill_loses_only_steps_since_the_last_checkpoint(tmp_path, synthetic_data_dir,
                                                            uninterrupted):
  proc = _start(tmp_path, synthetic_data_dir)
  cli.wait_for_step(proc, 8)
  proc.kill()
  proc.communicate(timeout=60)
  assert _saved_steps(tmp_path)[-1] in (3, 6)
  resumed = cli.run_main(tmp_path, synthetic_data_dir, **RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  cli.assert_same_arrays(cli.final_params(tmp_path), uninterrupted)


def test_fine_tuning_from_a_checkpoint_whose_head_fits_starts_from_a_zero_head(
    tmp_path, synthetic_data_dir):
  model = models.ResNetV2(depth=14, width=1, num_classes=90)  # The upstream set's 90 classes.
  # Jitted: an eager init compiles every operation on its own, seconds of CPU for random values.
  params = jax.jit(model.init)(jax.random.key(5), jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree.map(lambda p: p + 0.5, params)  # A non-zero head, to see it replaced.
  interop.save_bit_npz(params, tmp_path / "pretrained.npz")
  result = cli.run_main(tmp_path / "run", synthetic_data_dir, init=tmp_path / "pretrained.npz",
                        lr=1e-30, **dict(RUN, total_steps=3))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "re-initialized head/kernel: fine-tuning starts from a new head" in result.stderr
  final = cli.final_params(tmp_path / "run")
  # The new head starts at zero; a learning rate of 1e-30 leaves every weight where it began.
  np.testing.assert_allclose(final["head"]["kernel"], np.zeros((2048, 90)), atol=1e-25)
  np.testing.assert_allclose(final["block3_unit01"]["conv2"]["kernel"],
                             params["block3_unit01"]["conv2"]["kernel"], rtol=1e-6)
