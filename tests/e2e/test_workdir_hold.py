"""One job per workdir: claims, refusals, takeovers, heartbeats, on local and gs:// paths."""

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import time

import fsspec
import pytest
from etils import epath
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem

import cli
from big_transfer import errors
from big_transfer.launch import workdir_hold


def _holder(**changes) -> workdir_hold.Holder:
  """A hold of another job: a live process (pytest's parent) on this host, heartbeat now."""
  now = time.time()
  fields = dict(host=socket.gethostname(), pid=os.getppid(), job=None, attempt=0,
                started=now - 60, heartbeat=now, token="0123456789abcdef")
  fields.update(changes)
  return workdir_hold.Holder(**fields)


def _put(workdir, holder: workdir_hold.Holder) -> None:
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  (epath.Path(workdir) / workdir_hold.HOLD_NAME).write_text(json.dumps(dataclasses.asdict(holder)))


@pytest.fixture(autouse=True)
def no_job(monkeypatch):
  for name in ("BIG_TRANSFER_JOB_ID", "BIG_TRANSFER_JOB_ATTEMPT", "SLURM_JOB_ID",
               "SLURM_RESTART_COUNT"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(workdir_hold, "SETTLE_S", 0.05)


def test_a_free_workdir_is_held_while_the_run_lasts_and_released_after(tmp_path):
  workdir = tmp_path / "new" / "run"
  with workdir_hold.hold(workdir, stale_after_s=60):
    holder = workdir_hold.read(workdir)
    assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
    assert holder.job is None and len(holder.token) == 16
  assert not (workdir / "HOLD").exists()
  assert sorted(p.name for p in workdir.iterdir()) == []  # No temporary file left behind.


def test_the_hold_is_released_when_the_run_fails(tmp_path):
  with pytest.raises(RuntimeError, match="boom"):
    with workdir_hold.hold(tmp_path, stale_after_s=60):
      raise RuntimeError("boom")
  assert not (tmp_path / "HOLD").exists()


def test_a_live_hold_stops_a_second_job_naming_the_holder(tmp_path):
  _put(tmp_path, _holder())
  before = (tmp_path / "HOLD").read_text()
  with pytest.raises(errors.WorkdirHeldError) as refused:
    with workdir_hold.hold(tmp_path, stale_after_s=60):
      pytest.fail("the block of a refused job ran")
  message = str(refused.value)
  assert f"process {os.getppid()} on host {socket.gethostname()}" in message
  assert "started " in message and " UTC" in message and "\n" not in message
  assert (tmp_path / "HOLD").read_text() == before  # The live job's hold is untouched.


def test_a_fresh_hold_of_another_host_stops_a_second_job(tmp_path):
  _put(tmp_path, _holder(host="tpu-worker-0", pid=1))
  with pytest.raises(errors.WorkdirHeldError, match="process 1 on host tpu-worker-0"):
    with workdir_hold.hold(tmp_path, stale_after_s=60):
      pass


def test_a_hold_without_heartbeat_for_the_stale_time_is_taken_over_with_a_warning(
    tmp_path, caplog):
  _put(tmp_path, _holder(host="gone-host", pid=77, heartbeat=time.time() - 61))
  with caplog.at_level(logging.WARNING):
    with workdir_hold.hold(tmp_path, stale_after_s=60):
      assert workdir_hold.read(tmp_path).pid == os.getpid()
  assert "Taking over" in caplog.text and "process 77 on host gone-host" in caplog.text
  assert "its last heartbeat is 61 s old (stale after 60 s)" in caplog.text


def test_a_hold_of_a_process_gone_from_this_host_is_taken_over_at_once(tmp_path, caplog):
  dead = subprocess.Popen(["true"])
  dead.wait()
  _put(tmp_path, _holder(pid=dead.pid))
  with caplog.at_level(logging.WARNING):
    with workdir_hold.hold(tmp_path, stale_after_s=600):
      assert workdir_hold.read(tmp_path).pid == os.getpid()
  assert f"process {dead.pid} no longer runs on this host" in caplog.text


@pytest.mark.parametrize("id_variable, attempt_variable, job", [
    ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "slurm:731"),  # A SLURM requeue.
    ("BIG_TRANSFER_JOB_ID", "BIG_TRANSFER_JOB_ATTEMPT", "731"),  # A JobSet restart.
])
def test_an_earlier_attempt_of_the_same_job_is_taken_over_and_the_same_attempt_is_not(
    tmp_path, monkeypatch, caplog, id_variable, attempt_variable, job):
  monkeypatch.setenv(id_variable, "731")
  monkeypatch.setenv(attempt_variable, "2")
  _put(tmp_path, _holder(host="gpu007", pid=9, job=job, attempt=2))
  with pytest.raises(errors.WorkdirHeldError, match=f"job {job} attempt 2"):
    with workdir_hold.hold(tmp_path, stale_after_s=600):
      pass
  _put(tmp_path, _holder(host="gpu007", pid=9, job=job, attempt=1))
  with caplog.at_level(logging.WARNING):
    with workdir_hold.hold(tmp_path, stale_after_s=600):
      assert workdir_hold.read(tmp_path).attempt == 2
  assert "it is attempt 1 of this job, which is now at attempt 2" in caplog.text


def test_the_heartbeat_is_refreshed_while_the_run_lasts(tmp_path):
  with workdir_hold.hold(tmp_path, stale_after_s=1.0):  # Refreshed every 0.1 s.
    first = workdir_hold.read(tmp_path).heartbeat
    time.sleep(0.5)
    later = workdir_hold.read(tmp_path)
  assert later.heartbeat > first + 0.2
  assert later.started < first + 0.01


def test_an_unreadable_hold_is_named_with_what_to_do(tmp_path):
  (tmp_path / "HOLD").write_text("{not json")
  with pytest.raises(errors.WorkdirHeldError, match=r"HOLD cannot be read .* delete the file"):
    with workdir_hold.hold(tmp_path, stale_after_s=60):
      pass


@pytest.fixture
def gcs(monkeypatch):
  """gs:// paths served from memory through epath's fsspec backend (the tests reach no GCS)."""
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  fsspec.register_implementation("gcs", MemoryFileSystem, clobber=True)
  MemoryFileSystem.store.clear()
  yield "gs://bucket/runs/bit"
  MemoryFileSystem.store.clear()


def test_a_gs_workdir_is_claimed_by_write_and_read_back_and_released(gcs, monkeypatch):
  # Object stores have no hard links; a claim there must not need one.
  monkeypatch.setattr(os, "link", lambda *args: pytest.fail("os.link on a gs:// path"))
  with workdir_hold.hold(gcs, stale_after_s=60):
    assert workdir_hold.read(gcs).pid == os.getpid()
    monkeypatch.setattr(socket, "gethostname", lambda: "second-vm")
    with pytest.raises(errors.WorkdirHeldError, match=f"process {os.getpid()}"):
      workdir_hold._claim(gcs, stale_after_s=60)  # A job on another host sees the hold.
  assert workdir_hold.read(gcs) is None


def test_of_two_jobs_claiming_a_gs_workdir_at_once_the_one_read_back_wins(gcs, monkeypatch):
  competitor = _holder(host="other-vm", pid=5)
  sleep = time.sleep

  def competitor_writes_while_we_settle(seconds):
    _put(gcs, competitor)
    sleep(seconds)

  monkeypatch.setattr(workdir_hold.time, "sleep", competitor_writes_while_we_settle)
  with pytest.raises(errors.WorkdirHeldError, match="process 5 on host other-vm"):
    with workdir_hold.hold(gcs, stale_after_s=60):
      pass
  assert workdir_hold.read(gcs).token == competitor.token


def _held_workdir_message(stderr: str) -> str:
  lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


# The runs of tests/test_checkpoints.py, whose compiled programs the cache then holds.
RUN = {"total_steps": 12, "checkpoint_every_steps": 3, "log_every_steps": 1,
       "fewshot.shots": "()", "decay_fractions": "(0.6667,)"}


def _start(workdir, data_dir):
  return subprocess.Popen(cli.main_args(workdir, data_dir, **RUN), cwd=cli.REPO, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=cli.env_with_devices(1))


def test_a_second_run_on_a_held_workdir_fails_in_one_line_and_the_first_finishes_untouched(
    tmp_path, synthetic_data_dir):
  # The first run starts by taking over the hold of a job that died an hour ago.
  _put(tmp_path, _holder(host="preempted-vm", pid=4321, heartbeat=time.time() - 3600))
  first = _start(tmp_path, synthetic_data_dir)
  deadline = time.time() + 300
  holder = workdir_hold.read(tmp_path)
  while holder.host == "preempted-vm":
    assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
    time.sleep(0.2)
    holder = workdir_hold.read(tmp_path)
  assert holder.pid == first.pid  # The first run took the hold over and still holds it.
  # Paused, the first run holds the workdir for as long as the second takes to start and stop.
  first.send_signal(signal.SIGSTOP)
  try:
    second = cli.run_main(tmp_path, synthetic_data_dir, **RUN)
  finally:
    first.send_signal(signal.SIGCONT)
  assert second.returncode == 1
  assert "Traceback" not in second.stderr
  assert f"is held by a running job: process {first.pid} on host {socket.gethostname()}" \
      in _held_workdir_message(second.stderr)
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  assert "Taking over" in err and "process 4321 on host preempted-vm" in err
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == 12
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["12", "6", "9"]
  assert not (tmp_path / "HOLD").exists()


def test_every_process_of_a_job_on_a_held_workdir_stops_in_one_line(tmp_path,
                                                                      synthetic_data_dir):
  _put(tmp_path, _holder(host="elsewhere", pid=99))
  port = cli.free_port()
  # A short peer timeout bounds every wait of the job's way out (the barrier, process 0 leaving
  # last) should a process be slow to get there.
  procs = [subprocess.Popen(
      cli.main_args(tmp_path, synthetic_data_dir, peer_timeout_s=5), cwd=cli.REPO, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=cli.env_with_devices(2, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                               JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i)) for i in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    assert "process 99 on host elsewhere" in _held_workdir_message(err)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["HOLD"]
