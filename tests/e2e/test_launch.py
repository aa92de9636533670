"""tpu/launch, its worker script, the JobSets it writes and the SLURM script, without a cloud.

Dry runs are compared with reviewed golden files (BIG_TRANSFER_UPDATE_GOLDEN=1 rewrites them);
real runs go to fake gcloud/git/kubectl/srun/scontrol programs, first on PATH, that record what
they were asked. A TPU VM worker is played by a temporary home directory.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile

import jsonschema
import kubernetes_validate
import pytest
import yaml

import cli

LAUNCH = cli.REPO / "tpu" / "launch"
GOLDEN = pathlib.Path(__file__).parent / "golden" / "launch"
UPDATE_GOLDEN = os.environ.get("BIG_TRANSFER_UPDATE_GOLDEN") == "1"
SHELL_SCRIPTS = ("tpu/worker.sh", "tpu/slurm/train.sbatch", "benchmarks/accelerator.sh")
ZONE = "us-central2-b"
MAIN_ARGS = ["--config=configs/bit_s.py:model=BiT-S-R50x1", "--workdir=gs://bit-bucket/bit_s",
             "--config.data.data_dir=gs://bit-bucket/tensorflow_datasets"]
# The Kubernetes version whose schemas the jobs are checked against (GKE's oldest supported).
KUBERNETES_VERSION = "1.31.0"

_FAKE = """
import json, os, sys
record = {"argv": [os.path.basename(sys.argv[0])] + sys.argv[1:]}
if record["argv"][0] == "kubectl":
  record["stdin"] = sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as log:
  log.write(json.dumps(record) + "\\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@pytest.fixture
def fakes(tmp_path):
  """A folder of fake programs for PATH, and a function returning what they were asked."""
  bin_dir = tmp_path / "fake_bin"
  bin_dir.mkdir()
  for name in ("gcloud", "git", "kubectl", "srun", "scontrol"):
    (bin_dir / name).write_text(f"#!{sys.executable}\n{_FAKE}")
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "fake_calls.jsonl"

  def calls():
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

  calls.bin_dir, calls.log = bin_dir, log
  return calls


def _env(fakes=None, **extra) -> dict:
  """This process's environment without the launcher's defaults, fakes first on PATH."""
  env = {key: value for key, value in os.environ.items()
         if key not in ("TPU_NAME", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "CLOUDSDK_COMPUTE_ZONE",
                        "CLOUDSDK_CORE_PROJECT", "TFDS_DATA_DIR", "BIG_TRANSFER_PYTHON")}
  if fakes is not None:
    env["PATH"] = f"{fakes.bin_dir}{os.pathsep}{env['PATH']}"
    env["FAKE_LOG"] = str(fakes.log)
  env.update(extra)
  return env


def _launch(argv, env=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(LAUNCH), *argv], text=True, capture_output=True,
                        env=env or _env(), timeout=60)


def _dry(argv: list[str]) -> list[str]:
  """`argv` with --dry-run placed before the training arguments."""
  split = argv.index("--") if "--" in argv else len(argv)
  return [*argv[:split], "--dry-run", *argv[split:]]


def _tpu_vm_invocations(name: str, tpu_type: str) -> list[list[str]]:
  where = ["--name", name, "--zone", ZONE]
  return [
      ["create", *where, "--type", tpu_type],
      ["create", *where, "--type", tpu_type, "--spot", "--queued", "--project", "bit-project"],
      ["setup", *where],
      ["setup", *where, "--ref", "v0.1.0", "--wheel", "dist/big_transfer-0.1.0-py3-none-any.whl"],
      ["run", *where, "--env", "TFDS_DATA_DIR=gs://bit-bucket/tensorflow_datasets", "--",
       *MAIN_ARGS],
      ["logs", *where, "--worker", "1"],
      ["stop", *where],
      ["delete", *where],
      ["delete", *where, "--queued"],
  ]


def _check_golden(name: str, text: str) -> None:
  path = GOLDEN / name
  if UPDATE_GOLDEN:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  assert path.exists(), f"no golden file {path}; run with BIG_TRANSFER_UPDATE_GOLDEN=1"
  assert text == path.read_text(), f"output differs from {path}"


@pytest.mark.parametrize("tpu_type", ["v4-8", "v4-32"])  # One host; four hosts.
def test_dry_run_of_every_tpu_vm_subcommand_matches_its_golden_file(tpu_type):
  transcript = []
  for argv in _tpu_vm_invocations(f"bit-{tpu_type}", tpu_type):
    result = _launch(_dry(argv))
    assert result.returncode == 0, result.stderr
    transcript.append(f"$ tpu/launch {shlex.join(_dry(argv))}\n{result.stdout}")
  _check_golden(f"tpu-vm-{tpu_type}.txt", "\n".join(transcript).replace(str(cli.REPO), "<repo>"))


@pytest.mark.parametrize("subcommand", ["create", "setup", "run", "logs", "stop", "delete",
                                        "jobset"])
def test_every_subcommand_explains_itself_and_offers_a_dry_run(subcommand):
  result = _launch([subcommand, "--help"])
  assert result.returncode == 0
  assert "--dry-run" in result.stdout and "print the exact commands" in result.stdout


def test_each_subcommand_runs_exactly_the_commands_its_dry_run_prints(fakes):
  for argv in _tpu_vm_invocations("bit-v4-32", "v4-32"):
    printed = [shlex.split(line) for line in _launch(_dry(argv)).stdout.splitlines()]
    fakes.log.unlink(missing_ok=True)
    result = _launch(argv, env=_env(fakes))
    assert result.returncode == 0, result.stderr
    # mkdir is the real one; every other command went to a fake.
    assert [call["argv"] for call in fakes()] == [c for c in printed if c[0] != "mkdir"], argv


def test_names_zone_and_project_come_from_gclouds_environment_variables():
  explicit = _launch(["create", "--name", "bit", "--zone", ZONE, "--project", "bit-project",
                      "--type", "v5litepod-16", "--dry-run"])
  from_env = _launch(["create", "--dry-run"], env=_env(
      TPU_NAME="bit", CLOUDSDK_COMPUTE_ZONE=ZONE, CLOUDSDK_CORE_PROJECT="bit-project",
      ACCELERATOR_TYPE="v5litepod-16"))
  assert from_env.returncode == 0, from_env.stderr
  assert from_env.stdout == explicit.stdout
  assert "--version=v2-alpha-tpuv5-lite" in from_env.stdout
  # Without them, gcloud's own configuration decides: no flag is passed.
  bare = _launch(["delete", "--name", "bit", "--dry-run"])
  assert bare.stdout == "gcloud compute tpus tpu-vm delete bit\n"


@pytest.mark.parametrize("tpu_type, version", [
    ("v3-8", "tpu-ubuntu2204-base"), ("v4-32", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-128", "v2-alpha-tpuv5"), ("v6e-64", "v2-alpha-tpuv6e")])
def test_each_tpu_generation_gets_its_jax_runtime_version(tpu_type, version):
  result = _launch(["create", "--name", "bit", "--type", tpu_type, "--dry-run"])
  assert f"--accelerator-type={tpu_type} --version={version}" in result.stdout


@pytest.mark.parametrize("argv, exit_code, message", [
    (["create", "--name", "b", "--type", "v9-8"], 2, "unknown TPU accelerator type 'v9-8'"),
    (["create", "--name", "b", "--type", "v4-7"], 2, "multiple of 2"),
    (["create", "--name", "b", "--best-effort"], 1, "add --queued"),
    (["run", "--name", "b", "--", "--config=configs/demo.py", "--workdir=/tmp/run"], 1,
     "--workdir=/tmp/run is on each worker's own disk"),
    (["run", "--name", "b", "--", "--config.lr=0.1", "--workdir=gs://b/w"], 1,
     "--config=configs/bit_s.py"),
    (["stop"], 1, "name the TPU with --name or $TPU_NAME"),
    (["jobset", "--name", "Bad_Name", "--image", "i", "--tpu-type", "v4-8", "--",
      "--config=c", "--workdir=gs://b/w"], 1, "JobSet name 'Bad_Name' must be lowercase"),
    (["jobset", "--name", "bit", "--image", "i", "--tpu-type", "v3-8", "--",
      "--config=c", "--workdir=gs://b/w"], 1, "GKE has no v3 node pools"),
])
def test_a_launch_that_cannot_work_fails_naming_the_fix(argv, exit_code, message):
  result = _launch(_dry(argv))
  assert result.returncode == exit_code
  assert message in result.stderr and result.stdout == ""


def test_every_shell_script_passes_shellcheck():
  cli.assert_shellcheck_passes(*SHELL_SCRIPTS, cwd=cli.REPO)


# --- A TPU VM worker, played by a temporary home directory. ----------------------------------

_FAKE_UV = """#!/usr/bin/env bash
echo "$*" >>"$HOME/uv_calls"
if [[ "$1" == venv ]]; then
  mkdir -p "${@: -1}/bin"
  cp "$FAKE_PYTHON" "${@: -1}/bin/python"
fi
"""

# The environment's python: prints a version, or "trains" until SIGTERM, then exits 143.
_FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1" == -c ]]; then echo 0.1.0; exit 0; fi
echo "training: $* TFDS_DATA_DIR=${TFDS_DATA_DIR:-}"
trap 'echo "SIGTERM: saved a checkpoint"; exit 143' TERM
while true; do sleep 0.1; done
"""


def _remote_command(call) -> str:
  argv = call["argv"]
  assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in argv
  return argv[argv.index("--command") + 1]


def _on_worker(home, command: str) -> subprocess.CompletedProcess:
  """Runs a remote command as `gcloud ... ssh` would on a worker whose home is `home`."""
  return subprocess.run(["bash", "-c", command], cwd=home, text=True, capture_output=True,
                        timeout=60, env=dict(_env(), HOME=str(home),
                                             PATH=f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}",
                                             FAKE_PYTHON=str(home / "fake_python")))


def test_setup_run_and_stop_on_a_worker(tmp_path, fakes):
  home = tmp_path / "worker"
  (home / "bin").mkdir(parents=True)
  (home / "bin" / "uv").write_text(_FAKE_UV)
  (home / "fake_python").write_text(_FAKE_PYTHON)
  for script in (home / "bin" / "uv", home / "fake_python"):
    script.chmod(0o755)
  where = ["--name", "bit", "--zone", ZONE]
  (fakes.bin_dir / "git").unlink()  # The archive is the real one of this checkout,
  # uncommitted changes of tracked files included (`git stash create` commits them aside).
  ref = subprocess.run(["git", "stash", "create"], cwd=cli.REPO, text=True, check=True,
                       capture_output=True).stdout.strip() or "HEAD"

  assert _launch(["setup", *where, "--ref", ref], env=_env(fakes)).returncode == 0
  scp, ssh = fakes()
  archive = pathlib.Path(scp["argv"][5])
  with tarfile.open(archive) as shipped:
    assert "big_transfer.new/tpu/worker.sh" in shipped.getnames()
  shutil.copy(archive, home / scp["argv"][6].split(":", 1)[1])
  setup = _on_worker(home, _remote_command(ssh))
  assert setup.returncode == 0, setup.stderr
  assert (home / "big_transfer" / "big_transfer" / "training" / "loop.py").exists()
  assert not (home / "big_transfer.new").exists()
  assert (home / "uv_calls").read_text().splitlines() == [
      f"venv --python 3.12 {home}/big_transfer_env",
      f"pip install --python {home}/big_transfer_env/bin/python -e {home}/big_transfer[tpu]"]

  fakes.log.unlink()
  assert _launch(["run", *where, "--", *MAIN_ARGS],
                 env=_env(fakes, TFDS_DATA_DIR="gs://bit-bucket/tfds")).returncode == 0
  start = _remote_command(fakes()[0])
  started = _on_worker(home, start)
  assert started.returncode == 0, started.stderr
  pid = int((home / "big_transfer_run" / "train.pid").read_text())
  cmdline = [arg.decode() for arg in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
  assert cmdline[-len(MAIN_ARGS) - 3:] == ["-m", "big_transfer.main", *MAIN_ARGS, ""]
  again = _on_worker(home, start)
  assert again.returncode == 1 and f"a job is already running (pid {pid})" in again.stderr

  fakes.log.unlink()
  assert _launch(["stop", *where], env=_env(fakes)).returncode == 0
  stopped = _on_worker(home, _remote_command(fakes()[0]))
  assert stopped.returncode == 0, stopped.stderr
  assert "stopped after" in stopped.stdout
  log = (home / "big_transfer_run" / "train.log").read_text()
  assert f"training: -m big_transfer.main {shlex.join(MAIN_ARGS)} " \
         "TFDS_DATA_DIR=gs://bit-bucket/tfds" in log
  assert "SIGTERM: saved a checkpoint" in log


# --- GKE JobSets. ---------------------------------------------------------------------------

_JOBSETS = {
    "jobset-tpu-v4-8.yaml": ["--name", "bit-s", "--tpu-type", "v4-8"],
    "jobset-tpu-v4-32x2.yaml": ["--name", "bit-m", "--tpu-type", "v4-32", "--slices", "2"],
    "jobset-gpu-2x8.yaml": ["--name", "bit-gpu", "--gpus-per-node", "8", "--nodes", "2"],
}
_IMAGE = "us-docker.pkg.dev/bit-project/bit/big_transfer:v0.1.0"

# The JobSet's own fields (jobset.x-k8s.io/v1alpha2), closed, from the API's Go types; the Job
# template inside is checked against Kubernetes' own schema.
_DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_STRINGS = {"type": "array", "items": {"type": "string"}}
JOBSET_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "jobset.x-k8s.io/v1alpha2"},
        "kind": {"const": "JobSet"},
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name"],
                     "properties": {
                         "name": {"type": "string", "pattern": _DNS_LABEL, "maxLength": 63},
                         "namespace": {"type": "string"},
                         "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                         "annotations": {"type": "object",
                                         "additionalProperties": {"type": "string"}}}},
        "spec": {"type": "object", "additionalProperties": False, "required": ["replicatedJobs"],
                 "properties": {
                     "network": {"type": "object", "additionalProperties": False, "properties": {
                         "enableDNSHostnames": {"type": "boolean"},
                         "subdomain": {"type": "string"},
                         "publishNotReadyAddresses": {"type": "boolean"}}},
                     "failurePolicy": {"type": "object", "additionalProperties": False,
                                       "properties": {
                         "maxRestarts": {"type": "integer", "minimum": 0},
                         "restartStrategy": {"enum": ["Recreate", "BlockingRecreate",
                                                      "InPlaceRestart"]},
                         "rules": {"type": "array", "items": {
                             "type": "object", "additionalProperties": False,
                             "required": ["name", "action"], "properties": {
                                 "name": {"type": "string"},
                                 "action": {"enum": ["FailJobSet", "RestartJobSet",
                                                     "RestartJobSetAndIgnoreMaxRestarts",
                                                     "RestartJob",
                                                     "RestartJobAndIgnoreMaxRestarts"]},
                                 "onJobFailureReasons": {"type": "array", "items": {"enum": [
                                     "BackoffLimitExceeded", "DeadlineExceeded",
                                     "PodFailurePolicy", "MaxFailedIndexesExceeded"]}},
                                 "onJobFailureMessagePatterns": _STRINGS,
                                 "targetReplicatedJobs": _STRINGS}}}}},
                     "suspend": {"type": "boolean"},
                     "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                     "replicatedJobs": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False,
                         "required": ["name", "template"], "properties": {
                             "name": {"type": "string", "pattern": _DNS_LABEL},
                             "replicas": {"type": "integer", "minimum": 1},
                             "template": {"type": "object", "additionalProperties": False,
                                          "required": ["spec"], "properties": {
                                              "metadata": {"type": "object"},
                                              "spec": {"type": "object"}}}}}}}},
    },
}


def _jobset(golden_name: str) -> str:
  result = _launch(["jobset", *_JOBSETS[golden_name], "--image", _IMAGE,
                    "--env", "TFDS_DATA_DIR=gs://bit-bucket/tensorflow_datasets", "--",
                    *MAIN_ARGS])
  assert result.returncode == 0, result.stderr
  return result.stdout


@pytest.mark.parametrize("golden_name", sorted(_JOBSETS))
def test_jobsets_match_their_golden_files_and_validate_against_kubernetes_schemas(golden_name):
  text = _jobset(golden_name)
  _check_golden(golden_name, text)
  manifest = yaml.safe_load(text)
  jsonschema.validate(manifest, JOBSET_SCHEMA)
  for replicated in manifest["spec"]["replicatedJobs"]:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": replicated["name"]},
           "spec": replicated["template"]["spec"]}
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_the_jobset_schema_and_the_kubernetes_check_catch_misspelt_fields():
  manifest = yaml.safe_load(_jobset("jobset-gpu-2x8.yaml"))
  manifest["spec"]["failurePolicy"]["maxRestart"] = 3
  with pytest.raises(jsonschema.ValidationError, match="maxRestart"):
    jsonschema.validate(manifest, JOBSET_SCHEMA)
  spec = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
  spec["template"]["spec"]["containers"][0]["commands"] = ["x"]
  with pytest.raises(kubernetes_validate.ValidationError, match="commands"):
    kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job",
                                  "metadata": {"name": "w"}, "spec": spec},
                                 KUBERNETES_VERSION, strict=True)


def test_every_pod_of_a_multislice_jobset_joins_with_its_own_process_id(tmp_path):
  manifest = yaml.safe_load(_jobset("jobset-tpu-v4-32x2.yaml"))
  replicated = manifest["spec"]["replicatedJobs"][0]
  job = replicated["template"]["spec"]
  container = job["template"]["spec"]["containers"][0]
  env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
  # Kubernetes reduces `$$` to `$` in a container's command before running it.
  command = [part.replace("$$", "$") for part in container["command"]]
  (tmp_path / "python").write_text(
      '#!/bin/sh\necho "$JAX_PROCESS_ID $JAX_NUM_PROCESSES $JAX_COORDINATOR_ADDRESS $*"\n')
  (tmp_path / "python").chmod(0o755)
  seen = []
  for slice_index in range(replicated["replicas"]):
    for host_index in range(job["completions"]):
      out = subprocess.run(command, text=True, capture_output=True, check=True, env=dict(
          env, SLICE_INDEX=str(slice_index), HOST_INDEX=str(host_index),
          PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")).stdout.split()
      seen.append(int(out[0]))
      # Pod 0 of slice 0 of JobSet bit-m, through the JobSet's headless service.
      assert out[1:3] == ["8", "bit-m-workers-0-0.bit-m:8476"]
      assert out[3:] == ["-m", "big_transfer.main", *MAIN_ARGS]
  assert sorted(seen) == list(range(8))
  cli.assert_container_command_passes_shellcheck(tmp_path, command[2])


def test_jobset_apply_submits_the_manifest_with_kubectl(fakes):
  argv = ["jobset", *_JOBSETS["jobset-gpu-2x8.yaml"], "--image", _IMAGE, "--apply", "--",
          *MAIN_ARGS]
  dry = _launch(_dry(argv))
  applied = _launch(argv, env=_env(fakes))
  assert applied.returncode == 0, applied.stderr
  [call] = fakes()
  assert call["argv"] == ["kubectl", "apply", "-f", "-"]
  assert dry.stdout == f"kubectl apply -f - <<'EOF'\n{call['stdin']}EOF\n"
  assert yaml.safe_load(call["stdin"])["metadata"]["name"] == "bit-gpu"


def test_jobset_output_writes_the_file_that_apply_submits_and_a_dry_run_writes_nothing(
    tmp_path, fakes):
  output = tmp_path / "bit-gpu.yaml"
  argv = ["jobset", *_JOBSETS["jobset-gpu-2x8.yaml"], "--image", _IMAGE, "--output",
          str(output), "--apply", "--", *MAIN_ARGS]
  assert _launch(_dry(argv)).returncode == 0
  assert not output.exists()
  assert _launch(argv, env=_env(fakes)).returncode == 0
  printed = _launch(["jobset", *_JOBSETS["jobset-gpu-2x8.yaml"], "--image", _IMAGE, "--",
                     *MAIN_ARGS]).stdout
  assert output.read_text() == printed
  assert [call["argv"] for call in fakes()] == [["kubectl", "apply", "-f", str(output)]]


# --- SLURM. ---------------------------------------------------------------------------------

def _documented_sbatch_args() -> list[str]:
  """The arguments after the script in tpu/README.md's sbatch command."""
  readme = (cli.REPO / "tpu" / "README.md").read_text()
  [line] = re.findall(r"^sbatch .*?(?<!\\)$", readme.replace("\\\n", " "), flags=re.M)
  words = shlex.split(line)
  return words[words.index("tpu/slurm/train.sbatch") + 1:]


def _sbatch(fakes, args, srun_exit: int) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", "tpu/slurm/train.sbatch", *args], cwd=cli.REPO, text=True,
                        capture_output=True, timeout=60,
                        env=_env(fakes, SLURM_JOB_ID="4242", FAKE_EXIT=str(srun_exit)))


def test_the_slurm_script_runs_the_documented_command_in_every_task(fakes):
  args = _documented_sbatch_args()
  assert any(arg.startswith("--workdir=") for arg in args)
  result = _sbatch(fakes, args, srun_exit=0)
  assert result.returncode == 0, result.stderr
  assert [call["argv"] for call in fakes()] == [["srun", "python", "-m", "big_transfer.main",
                                                 *args]]


@pytest.mark.parametrize("exit_code, requeued", [(143, True), (1, False)])
def test_the_slurm_job_requeues_itself_after_a_sigterm_save_only(fakes, exit_code, requeued):
  result = _sbatch(fakes, ["--config=configs/demo.py", "--workdir=/shared/demo"], exit_code)
  assert result.returncode == exit_code
  requeues = [call["argv"] for call in fakes() if call["argv"][0] == "scontrol"]
  assert requeues == ([["scontrol", "requeue", "4242"]] if requeued else [])


def test_the_slurm_script_asks_for_sigterm_before_the_time_limit_and_requeue():
  directives = re.findall(r"^#SBATCH (\S+)", (cli.REPO / "tpu/slurm/train.sbatch").read_text(),
                          flags=re.M)
  assert "--requeue" in directives
  assert any(re.fullmatch(r"--signal=TERM@\d+", d) for d in directives)
