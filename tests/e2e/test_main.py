"""The command line end to end: training, evaluation, non-finite losses (multi-process jobs:
test_multi_process.py)."""

import json

import numpy as np
import pytest

import cli
from big_transfer.training import checkpoints


def test_loss_falls_on_the_built_in_data(tmp_path, synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, **{
      "dataset": "bit_synthetic/downstream", "total_steps": 40, "batch_size": 32,
      "log_every_steps": 10, "checkpoint_every_steps": 40, "lr": 0.01, "warmup_steps": 5,
      "decay_fractions": "(0.75,)", "fewshot.shots": "()", "data.recipe": "finetune",
      "data.precrop": 18})
  assert result.returncode == 0, result.stderr[-3000:]
  losses = [loss for _, loss in cli.scalars(tmp_path, "train/loss")]
  assert len(losses) == 4
  assert losses[-1] < 0.8 * losses[0], losses
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == 40
  assert summary["eval/examples"] == 500  # The downstream test split, every example once.


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, synthetic_data_dir):
  """The smoke demo with an evaluation mid-way and checkpoints every 2 steps, keeping the last
  and every 4th."""
  workdir = tmp_path_factory.mktemp("demo")
  result = cli.run_main(workdir, synthetic_data_dir, eval_every_steps=3,
                        checkpoint_every_steps=2, keep_checkpoints=1, keep_checkpoint_every=4)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_the_summary_holds_sane_evaluation_and_few_shot_values(demo_run):
  workdir, result = demo_run
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == 6
  assert summary["eval/examples"] == 900
  # A count of right answers over the 900 test images: neither a mean of batch means (the last
  # batch is padded) nor a fraction of a padded total.
  right = summary["eval/accuracy"] * 900
  assert right == pytest.approx(round(right), abs=1e-3) and 0 <= round(right) <= 900
  assert 0.0 < summary["eval/loss"] < 3 * np.log(90)  # Finite, and not wildly off chance.
  for k in (1, 5):  # The smoke demo's shots, 2 seeded draws each, on 10 downstream classes.
    draws = [summary[f"fewshot/bit_synthetic/downstream/{k}shot/seed{s}"] for s in (0, 1)]
    assert all(0.0 <= d <= 1.0 for d in draws)
    assert summary[f"fewshot/bit_synthetic/downstream/{k}shot"] == pytest.approx(np.mean(draws))
  assert summary["train"]["learning_rate"] == pytest.approx(0.01 * 0.1)  # After the decay at 4.
  printed = result.stdout.strip().splitlines()[-1]
  assert f"eval/accuracy={summary['eval/accuracy']:.4f}" in printed


def test_evaluation_runs_every_eval_every_steps_and_at_the_end(demo_run):
  workdir, _ = demo_run
  assert [step for step, _ in cli.scalars(workdir, "eval/accuracy")] == [3, 6]
  assert [step for step, _ in cli.scalars(workdir, "fewshot/bit_synthetic/downstream/1shot")] == [
      3, 6]


def test_checkpoints_keep_the_latest_and_every_keep_checkpoint_every(demo_run):
  workdir, _ = demo_run
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) \
      == [4, 6]


def test_the_console_shows_our_lines_and_progress_without_library_noise(demo_run):
  _, result = demo_run
  assert "Schedule: lr 0.01 at global batch 16" in result.stderr
  assert "Setting work unit notes" in result.stderr  # clu's progress line, with the ETA
  assert "is deprecated" not in result.stderr
  assert "steps_per_sec=" not in result.stderr and "uptime=" not in result.stderr


def test_fine_tuning_from_a_runs_workdir_loads_its_body_under_a_new_head(demo_run, tmp_path,
                                                                         synthetic_data_dir):
  upstream, _ = demo_run
  result = cli.run_main(tmp_path, synthetic_data_dir, init=upstream, total_steps=2, lr=1e-30,
                        dataset="bit_synthetic/downstream", warmup_steps=0, **{
                            "fewshot.shots": "()", "decay_fractions": "()",
                            "checkpoint_every_steps": 2})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "re-initialized head/kernel: fine-tuning starts from a new head" in result.stderr
  reader = lambda w: checkpoints.Checkpoints(w, every_steps=1, read_only=True).restore_params()
  source, tuned = reader(upstream), reader(tmp_path)
  np.testing.assert_allclose(tuned["block2_unit01"]["conv2"]["kernel"],
                             source["block2_unit01"]["conv2"]["kernel"], rtol=1e-6)
  # The new head starts at zero; a learning rate of 1e-30 leaves it there.
  np.testing.assert_allclose(tuned["head"]["kernel"], np.zeros((2048, 10)), atol=1e-25)


def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoints(tmp_path,
                                                                      synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, lr=1e30, checkpoint_every_steps=1,
                        log_every_steps=1, warmup_steps=0, total_steps=6)
  cli.assert_fails_in_one_line(result,
                               "The loss, gradients or parameters became NaN or infinite at step ")
  bad_step = int(result.stderr.split("infinite at step ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) <= bad_step
  assert not (tmp_path / "summary.json").exists()
