"""Multi-process jobs through the command line (2 processes of 2 CPU devices each on localhost,
joined through the JAX_* variables): one job trains as one, its checkpoint resumes on another
process count and mesh, and a lost process stops the other in one line, after which a rerun
resumes exactly. One uninterrupted job serves every test: a job costs a minute of CPU."""

import json
import shutil
import subprocess

import pytest

import cli
from big_transfer.training import checkpoints

TOTAL_STEPS = 12
PEER_TIMEOUT_S = 5
RUN = {"total_steps": TOTAL_STEPS, "checkpoint_every_steps": 3, "log_every_steps": 1,
       "fewshot.shots": "()", "decay_fractions": "(0.6667,)", "peer_timeout_s": PEER_TIMEOUT_S}


def _start_job(workdir, data_dir, **overrides) -> list[subprocess.Popen]:
  """Both processes of a 2-process job of 2 CPU devices each (every fake device repeats the
  replicated work, the optimizer update among it, on the same 2 cores)."""
  port = cli.free_port()
  return [subprocess.Popen(cli.main_args(workdir, data_dir, **{**RUN, **overrides}), cwd=cli.REPO,
                           text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=cli.env_with_devices(2, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                                    JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i))
          for i in range(2)]


def _finish(procs) -> list[str]:
  """Waits for every process of a job (reading each one's log, so none blocks on a full pipe);
  returns their logs after checking that each exited 0."""
  logs = [p.communicate(timeout=600)[1] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


@pytest.fixture(scope="module")
def job(tmp_path_factory, synthetic_data_dir):
  """An uninterrupted 2-process job, with the few-shot probe (each process fits its share)."""
  workdir = tmp_path_factory.mktemp("job")
  logs = _finish(_start_job(workdir, synthetic_data_dir, **{"fewshot.shots": "(1,)"}))
  return workdir, logs


def test_two_processes_train_as_one_job(job):
  workdir, logs = job
  assert "process 0 of 2, 2 local / 4 global devices" in logs[0]
  assert "process 1 of 2, 2 local / 4 global devices" in logs[1]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == TOTAL_STEPS
  assert summary["eval/examples"] == 900  # Every upstream test example counted once overall.
  assert 0.0 <= summary["fewshot/bit_synthetic/downstream/1shot"] <= 1.0
  assert checkpoints.saved_steps(workdir) == [6, 9, 12]  # Every 3 steps, the latest 3 kept.


def test_a_two_process_checkpoint_resumes_on_one_process_and_another_mesh(job, tmp_path,
                                                                          synthetic_data_dir):
  workdir = tmp_path / "copy"
  shutil.copytree(job[0], workdir)
  # The checkpoint of 2 processes x 2 devices (a data-parallel mesh of 4) resumes on 1 process
  # of 4 devices, on a 2 x 2 mesh.
  resumed = cli.run_main(workdir, synthetic_data_dir, num_devices=4, **{
      **RUN, "total_steps": TOTAL_STEPS + 2, "mesh.data": 2, "mesh.fsdp": 2})
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from the checkpoint at step {TOTAL_STEPS}" in resumed.stderr
  assert json.loads((workdir / "summary.json").read_text())["step"] == TOTAL_STEPS + 2


def test_a_killed_process_stops_the_other_in_one_line_and_a_rerun_resumes_exactly(
    job, tmp_path, synthetic_data_dir):
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

  logs = _finish(_start_job(tmp_path, synthetic_data_dir))
  for log in logs:
    assert f"Resuming from the checkpoint at step {max(complete)}" in log
  assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if "damaged" in p.name]
  # Each process reads its own share of the data, so the reference is the 2-process job.
  cli.assert_same_arrays(cli.final_params(tmp_path), cli.final_params(job[0]))


def test_a_peer_timeout_below_one_second_is_refused_in_one_line(tmp_path, synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, peer_timeout_s=0)
  cli.assert_fails_in_one_line(result, "peer_timeout_s must be a whole number of seconds >= 1, "
                                       "got 0 (--config.peer_timeout_s)")
