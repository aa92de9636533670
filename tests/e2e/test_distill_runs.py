"""Distillation through the command line: exact resume after SIGTERM, another teacher refused,
the export of the student."""

import json
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import bit_reference
import cli
from big_transfer import export
from big_transfer.models import interop

TOTAL_STEPS = 8
EVAL_EVERY = 4
# The distillation recipe, shrunk: 16 px, batch 16, few steps, no few-shot probes, an
# evaluation mid-way.
RUN = {"total_steps": TOTAL_STEPS, "warmup_steps": 2, "checkpoint_every_steps": 3,
       "log_every_steps": 1, "batch_size": 16, "data.crop": 16, "eval_batch_size": 64,
       "eval_every_steps": EVAL_EVERY}


def _teacher(path, seed):
  """A random R14x1 with the upstream set's 90 classes and a non-zero head, as a .npz (drawn
  with NumPy: initializing the model eagerly compiles op by op, 15 s of CPU)."""
  np.savez(path, **bit_reference.random_published_weights(14, 1, num_classes=90, seed=seed))
  return path


def _args(workdir, data_dir, teacher):
  return cli.main_args(workdir, data_dir, config=f"configs/distill.py:demo,teacher={teacher}",
                       **RUN)


def _run(workdir, data_dir, teacher):
  return subprocess.run(_args(workdir, data_dir, teacher), cwd=cli.REPO, text=True,
                        capture_output=True, timeout=900, env=cli.env_with_devices(1))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
  where = tmp_path_factory.mktemp("teachers")
  return _teacher(where / "a.npz", seed=1), _teacher(where / "b.npz", seed=5)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_data_dir, teachers):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  result = _run(workdir, synthetic_data_dir, teachers[0])
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_a_distillation_run_reports_student_teacher_agreement_and_kl(uninterrupted):
  summary = json.loads((uninterrupted / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == TOTAL_STEPS
  assert summary["eval/examples"] == 900
  for key in ("eval/accuracy", "eval/teacher_accuracy", "eval/agreement"):
    assert 0 <= summary[key] <= 1, key
  assert summary["eval/kl"] > 0
  assert summary["train"]["loss"] > 0


def test_the_teachers_top1_is_written_once_agreement_and_kl_at_every_evaluation(uninterrupted):
  for tag in ("eval/accuracy", "eval/agreement", "eval/kl"):
    assert [step for step, _ in cli.scalars(uninterrupted, tag)] == [EVAL_EVERY, TOTAL_STEPS], tag
  [(step, accuracy)] = cli.scalars(uninterrupted, "eval/teacher_accuracy")
  assert step == EVAL_EVERY
  summary = json.loads((uninterrupted / "summary.json").read_text())
  assert summary["eval/teacher_accuracy"] == pytest.approx(accuracy, rel=1e-6)


def test_sigterm_saves_and_the_same_command_resumes_exactly(tmp_path, synthetic_data_dir,
                                                            teachers, uninterrupted):
  proc = subprocess.Popen(_args(tmp_path, synthetic_data_dir, teachers[0]), cwd=cli.REPO,
                          text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=cli.env_with_devices(1))
  deadline, lines = time.time() + 600, []
  while time.time() < deadline:
    line = proc.stderr.readline()
    lines.append(line)
    if not line or "] [4] train/" in line:
      break
  assert "] [4] train/" in lines[-1], "".join(lines[-30:])
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  assert "Preempted: saved the checkpoint at step" in err
  resumed = _run(tmp_path, synthetic_data_dir, teachers[0])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from the checkpoint at step" in resumed.stderr
  cli.assert_same_arrays(cli.final_params(tmp_path), cli.final_params(uninterrupted))


def test_resuming_with_another_teacher_fails_in_one_line(tmp_path, synthetic_data_dir, teachers,
                                                         uninterrupted):
  before = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
  result = _run(uninterrupted, synthetic_data_dir, teachers[1])
  line = cli.assert_fails_in_one_line(result, "different run", "teacher_sha256: checkpoint has")
  assert "Use a new --workdir" in line
  assert sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()) == before


def test_the_export_of_a_distillation_run_is_the_student(uninterrupted, teachers, tmp_path):
  info = export.export(uninterrupted, tmp_path / "student.npz", "npz")
  exported = interop.load_bit_npz(tmp_path / "student.npz")
  student = cli.final_params(uninterrupted)
  assert jax.tree.structure(exported) == jax.tree.structure(student)
  cli.assert_same_arrays(exported, student)
  # Teacher and student are both R14x1 with 90 classes here: only the weights tell them apart.
  teacher = interop.load_bit_npz(teachers[0])
  assert not np.array_equal(exported["head"]["kernel"], teacher["head"]["kernel"])
  assert (info["model"], info["num_classes"]) == ("BiT-S-R14x1", 90)
