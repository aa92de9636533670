"""A lost process of a multi-process job: the other stops in one line and a rerun resumes exactly."""

import subprocess

import jax
import numpy as np

import cli
from big_transfer.training import checkpoints

TOTAL_STEPS = 12
PEER_TIMEOUT_S = 5
RUN = {"total_steps": TOTAL_STEPS, "checkpoint_every_steps": 3, "log_every_steps": 1,
       "fewshot.shots": "()", "decay_fractions": "(0.6667,)", "peer_timeout_s": PEER_TIMEOUT_S}


def _start_job(workdir, data_dir) -> list[subprocess.Popen]:
  """Both processes of a 2-process job of 4 CPU devices each, joined through the JAX_* variables."""
  port = cli.free_port()
  return [subprocess.Popen(cli.main_args(workdir, data_dir, **RUN), cwd=cli.REPO, text=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=cli.env_with_devices(4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                                    JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i))
          for i in range(2)]


def _final_params(workdir):
  return checkpoints.Checkpoints(workdir, every_steps=1, read_only=True).restore_params()


def test_a_killed_process_stops_the_other_in_one_line_and_a_rerun_resumes_exactly(
    tmp_path, synthetic_data_dir):
  procs = _start_job(tmp_path, synthetic_data_dir)
  cli.wait_for_step(procs[0], 7)
  procs[1].kill()
  procs[1].communicate(timeout=60)
  _, err = procs[0].communicate(timeout=120)  # Never a hang: the watch ends it.
  line = cli.assert_fails_in_one_line(subprocess.CompletedProcess([], procs[0].returncode, "", err))
  assert line == (f"error: Lost process 1 of this 2-process job (no heartbeat for {PEER_TIMEOUT_S} "
                  "s, --config.peer_timeout_s); process 0 stops too. Rerun all 2 processes with "
                  "the same command to resume from the latest complete checkpoint.")
  assert "Terminating process" not in err and "Fatal Python error" not in err, err[-3000:]
  assert not (tmp_path / "HOLD").exists()  # Released: a rerun from any host starts at once.
  listing = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  complete = checkpoints.saved_steps(tmp_path)
  assert complete and max(complete) in (3, 6), listing
  # A save the lost process never finished stays under orbax's temporary name.
  assert all(name.isdigit() or ".orbax-checkpoint-tmp" in name for name in listing), listing

  rerun = _start_job(tmp_path, synthetic_data_dir)
  outputs = [p.communicate(timeout=300)[1] for p in rerun]
  for p, rerun_err in zip(rerun, outputs):
    assert p.returncode == 0, rerun_err[-3000:]
    assert f"Resuming from the checkpoint at step {max(complete)}" in rerun_err
  assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if "damaged" in p.name]

  # Each process reads its own share of the data, so the reference is a job of 2 processes too.
  uninterrupted = tmp_path / "uninterrupted"
  reference = _start_job(uninterrupted, synthetic_data_dir)
  for p, reference_err in zip(reference, [p.communicate(timeout=300)[1] for p in reference]):
    assert p.returncode == 0, reference_err[-3000:]
  resumed, expected = _final_params(tmp_path), _final_params(uninterrupted)
  flat = jax.tree_util.tree_flatten_with_path(resumed)[0]
  assert len(flat) == len(jax.tree.leaves(expected))
  for (path, x), y in zip(flat, jax.tree.leaves(expected)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_a_peer_timeout_below_one_second_is_refused_in_one_line(tmp_path, synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, peer_timeout_s=0)
  cli.assert_fails_in_one_line(result, "peer_timeout_s must be a whole number of seconds >= 1, "
                                       "got 0 (--config.peer_timeout_s)")
