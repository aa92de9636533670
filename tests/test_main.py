"""The command line end to end: training, evaluation, multi-process jobs, non-finite losses."""

import json
import subprocess

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

import cli


def _scalars(workdir, tag):
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0})
  events.Reload()
  return [(e.step, float(np.asarray(e.tensor_proto.float_val or
                                    [np.frombuffer(e.tensor_proto.tensor_content, np.float32)[0]])[0]))
          for e in events.Tensors(tag)]


def test_loss_falls_on_the_built_in_data(tmp_path, synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, **{
      "dataset": "bit_synthetic/downstream", "total_steps": 40, "batch_size": 32,
      "log_every_steps": 10, "checkpoint_every_steps": 40, "lr": 0.01, "warmup_steps": 5,
      "decay_fractions": "(0.75,)", "fewshot.shots": "()", "data.recipe": "finetune",
      "data.precrop": 18})
  assert result.returncode == 0, result.stderr[-3000:]
  losses = [loss for _, loss in _scalars(tmp_path, "train/loss")]
  assert len(losses) == 4
  assert losses[-1] < 0.8 * losses[0], losses
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == 40
  assert summary["eval/examples"] == 500  # The downstream test split, every example once.


def test_two_processes_train_as_one_job_and_resume_on_one(tmp_path, synthetic_data_dir):
  port = cli.free_port()
  procs = [subprocess.Popen(
      cli.main_args(tmp_path, synthetic_data_dir, **{"fewshot.shots": "(1,)"}),
      cwd=cli.REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=cli.env_with_devices(4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                               JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i)) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "process 0 of 2, 4 local / 8 global devices" in outputs[0][1]
  assert "process 1 of 2, 4 local / 8 global devices" in outputs[1][1]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["eval/examples"] == 900  # Every upstream test example counted once overall.
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) \
      == [3, 6]
  # The 2 x 4 checkpoint resumes on 1 process x 8 devices and on a 4 x 2 mesh.
  resumed = cli.run_main(tmp_path, synthetic_data_dir, num_devices=8, total_steps=8,
                         **{"mesh.data": 4, "mesh.fsdp": 2, "fewshot.shots": "(1,)"})
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from the checkpoint at step 6" in resumed.stderr
  assert json.loads((tmp_path / "summary.json").read_text())["step"] == 8


def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoints(tmp_path,
                                                                      synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, lr=1e30, checkpoint_every_steps=1,
                        log_every_steps=1, warmup_steps=0, total_steps=6)
  cli.assert_fails_in_one_line(result, "The loss or gradients became NaN or infinite at step ")
  bad_step = int(result.stderr.split("infinite at step ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) <= bad_step
  assert not (tmp_path / "summary.json").exists()
