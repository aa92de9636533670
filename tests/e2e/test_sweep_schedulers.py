"""A sweep on schedulers: the SLURM job array script and the Kubernetes Indexed Job run member
I's printed line in task (completion index) I, without a cluster: fake srun/scontrol programs
and a fake `python` that records the command it was given."""

import json
import os
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

import cli
from big_transfer import sweep
from big_transfer.sweep import spec

SBATCH = "tpu/slurm/sweep.sbatch"
INDEXED_JOB = cli.REPO / "tpu" / "k8s" / "sweep-indexed-job.yaml"
# GKE's oldest supported version, as tests/test_launch.py checks the JobSets.
KUBERNETES_VERSION = "1.31.0"

# Records its argv (one JSON line per call) and exits with $FAKE_EXIT.
_RECORDER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
  log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@pytest.fixture
def fakes(tmp_path):
  """PATH with fake `srun` (runs its arguments), `scontrol` and `python` (record their argv)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("scontrol", "python"):
    (bin_dir / name).write_text(_RECORDER.format(python=sys.executable))
  (bin_dir / "srun").write_text('#!/usr/bin/env bash\n"$@"\nexit "${FAKE_EXIT:-$?}"\n')
  for program in bin_dir.iterdir():
    program.chmod(0o755)
  log = tmp_path / "calls.jsonl"

  def calls():
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

  calls.env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                   FAKE_LOG=str(log))
  return calls


@pytest.fixture
def commands(tmp_path):
  """Three members' printed lines, one with a space in its workdir and a tuple value."""
  members = spec.expand(sweep.Sweep(
      recipe="configs/hyperrule.py:model=BiT-S-R14x1",
      axes={"dataset": ("cifar10", "vtab/dtd", "oxford_iiit_pet")},
      base={"config.fewshot.shots": (1, 5)}))
  workdir = str(tmp_path / "my sweep")
  path = tmp_path / "commands.txt"
  path.write_text("".join(m.shell_line(workdir) + "\n" for m in members))
  return path, [m.command(workdir) for m in members]


def _array_task(fakes, commands_file, task, exit_code=0):
  return subprocess.run(["bash", SBATCH, str(commands_file)], cwd=cli.REPO, text=True,
                        capture_output=True, timeout=60,
                        env=dict(fakes.env, SLURM_ARRAY_TASK_ID=str(task),
                                 SLURM_ARRAY_JOB_ID="77", FAKE_EXIT=str(exit_code)))


def test_the_sweep_script_passes_shellcheck():
  cli.assert_shellcheck_passes(SBATCH, cwd=cli.REPO)


@pytest.mark.parametrize("task", [0, 2])
def test_each_array_task_runs_its_members_command_as_printed(fakes, commands, task):
  commands_file, argvs = commands
  result = _array_task(fakes, commands_file, task)
  assert result.returncode == 0, result.stderr
  assert fakes() == [argvs[task]]


@pytest.mark.parametrize("exit_code, requeued", [(143, True), (1, False)])
def test_a_task_requeues_itself_after_a_sigterm_save_only(fakes, commands, exit_code, requeued):
  result = _array_task(fakes, commands[0], 1, exit_code)
  assert result.returncode == exit_code
  requeues = [call for call in fakes() if call[0] == "scontrol"]
  assert requeues == ([["scontrol", "requeue", "77_1"]] if requeued else [])


def test_a_task_without_a_line_fails_naming_it(fakes, commands):
  result = _array_task(fakes, commands[0], 3)
  assert result.returncode == 1
  assert "has no line 4 for array task 3" in result.stderr
  assert fakes() == []


def _indexed_job() -> dict:
  return yaml.safe_load(INDEXED_JOB.read_text())


def test_the_indexed_job_validates_against_the_kubernetes_schema():
  job = _indexed_job()
  kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
  spec_ = job["spec"]
  assert (spec_["completionMode"], spec_["template"]["spec"]["restartPolicy"]) == (
      "Indexed", "Never")
  # A member stopped by SIGTERM (143) or killed after the grace period (137) is retried;
  # any other failure fails its own index only.
  [rule] = spec_["podFailurePolicy"]["rules"]
  assert rule["action"] == "FailIndex"
  assert rule["onExitCodes"] == {"containerName": "member", "operator": "NotIn",
                                 "values": [137, 143]}


def test_each_pod_of_the_indexed_job_runs_its_members_command(fakes, commands, tmp_path):
  commands_file, argvs = commands
  pod = _indexed_job()["spec"]["template"]["spec"]
  [container] = pod["containers"]
  [mount] = container["volumeMounts"]
  [volume] = pod["volumes"]
  assert mount["name"] == volume["name"] and "configMap" in volume
  # The ConfigMap made with --from-file=commands.txt, mounted where the command reads it.
  mounted = tmp_path / "mount"
  mounted.mkdir()
  shutil.copy(commands_file, mounted / "commands.txt")
  # Kubernetes reduces `$$` to `$` in a container's command before running it.
  command = [part.replace("$$", "$").replace(mount["mountPath"] + "/", f"{mounted}/")
             for part in container["command"]]
  for index in range(len(argvs)):
    subprocess.run(command, check=True, timeout=60,
                   env=dict(fakes.env, JOB_COMPLETION_INDEX=str(index)))
  assert fakes() == argvs
  cli.assert_container_command_passes_shellcheck(tmp_path, command[2])


def test_report_with_the_sweep_collects_members_a_scheduler_ran(tmp_path):
  (tmp_path / "two.py").write_text(
      "from big_transfer import sweep\n\n\ndef get_sweep(arg=''):\n"
      "  return sweep.Sweep(recipe='configs/hyperrule.py', axes={'dataset': ('cifar10', "
      "'cifar100')})\n")
  workdir = tmp_path / "sweep"
  (workdir / "dataset=cifar10").mkdir(parents=True)
  (workdir / "dataset=cifar10" / "summary.json").write_text(json.dumps(
      {"status": "completed", "step": 500, "eval/accuracy": 0.975}))
  result = subprocess.run([sys.executable, "-m", "big_transfer.sweep",
                           f"--sweep={tmp_path / 'two.py'}", f"--workdir={workdir}", "--report"],
                          cwd=cli.REPO, text=True, capture_output=True, timeout=300,
                          env=cli.env_with_devices(1))
  assert result.returncode == 0, result.stderr[-3000:]
  rows = (workdir / "results.csv").read_text().splitlines()
  assert [row.split(",")[:3] for row in rows[1:]] == [
      ["dataset=cifar10", "cifar10", "completed"], ["dataset=cifar100", "cifar100", "not run"]]
  assert "| `cifar10` | all | **97.5** |" in (workdir / "results.md").read_text()
