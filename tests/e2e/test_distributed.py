"""Joining a job only on a cluster, from the environment each scheduler gives a process."""

import dataclasses
import logging

import jax
import pytest
from jax._src import cloud_tpu_init

from big_transfer import errors, sharding
from big_transfer.launch import distributed

# Every variable the detection reads, cleared before each case sets its own.
_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
              "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID",
              "SLURM_STEP_NODELIST", "TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID")


# What every join passes: how long a silent process may take to count as lost.
_DEFAULTS = {"heartbeat_timeout_seconds": distributed.DEFAULT_PEER_TIMEOUT_S}


@pytest.fixture
def joins(monkeypatch):
  """Fakes a fresh process: returns the kwargs of each `jax.distributed.initialize` call."""
  for name in _VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  # The real update would switch this test process's CPU collectives.
  monkeypatch.setattr(jax.config, "update", lambda *args: None)
  return calls


def _slurm(monkeypatch, tasks: int, under_srun: bool = True):
  env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": tasks, "SLURM_PROCID": 0, "SLURM_LOCALID": 0}
  if under_srun:
    env.update(SLURM_STEP_NUM_TASKS=tasks, SLURM_STEP_NODELIST="gpu[001-004]")
  for name, value in env.items():
    monkeypatch.setenv(name, str(value))


def test_the_peer_timeout_becomes_the_runtimes_heartbeat_timeout(joins, monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
  distributed.initialize(peer_timeout_s=7)
  assert joins == [{"heartbeat_timeout_seconds": 7}]


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_a_peer_timeout_that_is_not_whole_positive_seconds_is_refused(joins, bad):
  with pytest.raises(errors.ConfigError, match=rf"peer_timeout_s must be a whole number of "
                                               rf"seconds >= 1, got {bad!r}"):
    distributed.initialize(peer_timeout_s=bad)
  assert joins == []


def test_a_plain_machine_runs_alone(joins):
  distributed.initialize()
  assert joins == []


def test_the_jax_variables_join_with_count_and_id_passed_on(joins, monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "trainer-workers-0-0.trainer:8476")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "16")
  monkeypatch.setenv("JAX_PROCESS_ID", "5")
  distributed.initialize()
  # The address JAX reads itself; the count and id it would not.
  assert joins == [{"num_processes": 16, "process_id": 5,
                    "heartbeat_timeout_seconds": distributed.DEFAULT_PEER_TIMEOUT_S}]


def test_an_srun_step_of_four_tasks_joins_through_jax_slurm_detection(joins, monkeypatch):
  _slurm(monkeypatch, tasks=4)
  distributed.initialize()
  assert joins == [_DEFAULTS]


def test_a_single_slurm_task_runs_alone(joins, monkeypatch):
  _slurm(monkeypatch, tasks=1)
  distributed.initialize()
  assert joins == []


def test_a_batch_script_without_srun_runs_alone_and_says_why(joins, monkeypatch, caplog):
  _slurm(monkeypatch, tasks=4, under_srun=False)
  with caplog.at_level(logging.WARNING):
    distributed.initialize()
  assert joins == []
  assert "4 tasks but this process was not started by srun" in caplog.text


def test_a_tpu_pod_slice_joins_and_a_single_tpu_host_runs_alone(joins, monkeypatch):
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5")
  distributed.initialize()
  assert joins == [_DEFAULTS]
  joins.clear()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2")
  distributed.initialize()
  assert joins == []


def test_a_cloud_tpu_vm_leaves_finding_its_workers_to_jax(joins, monkeypatch):
  monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", True)
  distributed.initialize()
  assert joins == [_DEFAULTS]


def test_an_initialized_process_does_not_join_again(joins, monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  distributed.initialize()
  assert joins == []


def test_startup_report_names_platform_processes_mesh_and_batches():
  line = sharding.describe(sharding.make_mesh(data=4, fsdp=2), 256, grad_accum_steps=2)
  assert line == ("platform cpu (cpu), process 0 of 1, 8 local / 8 global devices, "
                  "mesh data=4 x fsdp=2, global batch 256 = 16 per device x 8 devices x "
                  "2 accumulation steps")


def test_startup_report_warns_when_each_device_gets_under_eight_examples(caplog):
  mesh = sharding.make_mesh(data=8, fsdp=1)
  with caplog.at_level(logging.WARNING):
    sharding.describe(mesh, 64)
  assert not caplog.records
  with caplog.at_level(logging.WARNING):
    sharding.describe(mesh, 64, grad_accum_steps=2)
  assert "Each of the 8 devices gets 4 examples per step" in caplog.text


@dataclasses.dataclass(frozen=True)
class _TpuDevice:
  """What mesh layout reads from a device of a multi-slice TPU job."""
  id: int
  slice_index: int
  process_index: int
  platform: str = "cpu"  # Laid out in the order given, as JAX does for unknown hardware.
  device_kind: str = "fake"


def test_several_tpu_slices_split_the_data_axis_across_slices():
  devices = [_TpuDevice(id=i, slice_index=i // 4, process_index=i // 2) for i in range(8)]
  grid = sharding.multislice_device_grid((4, 2), devices)
  assert [[d.slice_index for d in row] for row in grid] == [[0, 0], [0, 0], [1, 1], [1, 1]]
  assert sorted(d.id for d in grid.flat) == list(range(8))
  with pytest.raises(errors.ConfigError, match="mesh.data=1 is not a multiple of the 2 TPU"):
    sharding.multislice_device_grid((1, 8), devices)
