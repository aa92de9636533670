"""Bad input as a new user gives it, through the programs: one `error:` line, nothing lost.

One finished smoke run is shared; each test that writes to a workdir works on its own copy.
"""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

import cli


def _listing(directory) -> list[tuple[str, str]]:
  """(relative path, sha256 of the content or "dir") of everything under `directory`."""
  return sorted((str(p.relative_to(directory)),
                 "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
                for p in directory.rglob("*"))


@pytest.fixture(scope="module")
def finished_smoke(tmp_path_factory, synthetic_data_dir):
  """A completed `configs/demo.py:smoke` workdir (checkpoints at steps 3 and 6)."""
  workdir = tmp_path_factory.mktemp("smoke")
  result = cli.run_main(workdir, synthetic_data_dir, **{"fewshot.shots": "()"})
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _copy(workdir, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return copy


@pytest.mark.parametrize("override, field", [
    ({"model": "BiT-S-R26x1"}, "model: checkpoint has 'BiT-S-R14x1', config has 'BiT-S-R26x1'"),
    ({"model": "BiT-S-R14x2"}, "model: checkpoint has 'BiT-S-R14x1', config has 'BiT-S-R14x2'"),
    ({"grad_clip_norm": 1.0}, "optimizer: checkpoint has 'add_decayed_weights -> trace', config "
                              "has 'clip_by_global_norm -> add_decayed_weights -> trace'"),
])
def test_a_resume_of_another_structure_is_refused_and_leaves_every_checkpoint(
    finished_smoke, tmp_path, synthetic_data_dir, override, field):
  workdir = _copy(finished_smoke, tmp_path)
  before = _listing(workdir / "checkpoints")
  refused = cli.run_main(workdir, synthetic_data_dir, **{"fewshot.shots": "()"}, **override)
  cli.assert_fails_in_one_line(refused, "The workdir holds checkpoints of a different run (",
                               field, "Use a new --workdir")
  assert "damaged" not in refused.stderr
  assert _listing(workdir / "checkpoints") == before
  resumed = cli.run_main(workdir, synthetic_data_dir, **{"fewshot.shots": "()"})
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from the checkpoint at step 6" in resumed.stderr


def test_an_older_record_without_the_structure_fields_is_checked_by_the_saved_layout(
    finished_smoke, tmp_path, synthetic_data_dir):
  workdir = _copy(finished_smoke, tmp_path)
  for metadata in (workdir / "checkpoints").glob("*/record/metadata"):
    record = json.loads(metadata.read_text())
    del record["state_dtypes"], record["optimizer"]
    metadata.write_text(json.dumps(record))
  before = _listing(workdir / "checkpoints")
  refused = cli.run_main(workdir, synthetic_data_dir, **{"fewshot.shots": "()"},
                         grad_clip_norm=1.0)
  cli.assert_fails_in_one_line(
      refused, "The workdir holds checkpoints of a different run (its saved state differs from "
               "this config's: opt_state/1/trace/", ": only in the checkpoint", "more arrays)")
  assert _listing(workdir / "checkpoints") == before


def test_a_damaged_latest_checkpoint_is_one_warning_line(finished_smoke, tmp_path,
                                                          synthetic_data_dir):
  workdir = _copy(finished_smoke, tmp_path)
  # The arrays' data files only: the metadata reads, the arrays do not.
  for f in (workdir / "checkpoints" / "6" / "state").rglob("ocdbt.process_0/d/*"):
    if f.stat().st_size > 100_000:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  resumed = cli.run_main(workdir, synthetic_data_dir, **{"fewshot.shots": "()"})
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # Not "Traceback": tensorstore's own threads may still print one "Event loop is closed" when a
  # read abandoned with the closed restore finishes (orbax closes its loop; a known race).
  for noise in ("Exception ignored", "Task exception was never retrieved"):
    assert noise not in resumed.stderr, resumed.stderr[-3000:]
  # Not "damaged": the test's own tmp_path holds the word.
  warnings = [line for line in resumed.stderr.splitlines() if "is damaged or incomplete" in line]
  assert len(warnings) == 1, warnings
  assert f"Checkpoint {workdir}/checkpoints/6 is damaged or incomplete" in warnings[0]
  assert "Resuming from the checkpoint at step 3" in resumed.stderr
  assert [p.name for p in (workdir / "checkpoints").glob("6.damaged-*")]


@pytest.mark.parametrize("override, message", [
    ({"lr": "nan"}, "lr must be a finite number, got nan (--config.lr)."),
    ({"weight_decay": "inf"}, "weight_decay must be a finite number, got inf "
                              "(--config.weight_decay)."),
    ({"lr": 0.0}, "lr must be positive, got 0.0."),
])
def test_a_non_finite_or_non_positive_number_is_refused_before_any_data_is_read(
    tmp_path, override, message):
  result = cli.run_main(tmp_path / "run", tmp_path / "no_data", **override)
  cli.assert_fails_in_one_line(result, message)
  assert not (tmp_path / "no_data").exists()


def test_parameters_that_overflow_stop_the_run_without_a_checkpoint(tmp_path,
                                                                    synthetic_data_dir):
  result = cli.run_main(tmp_path, synthetic_data_dir, lr=1e38, warmup_steps=0,
                        **{"fewshot.shots": "()"})
  cli.assert_fails_in_one_line(result, "The loss, gradients or parameters became NaN or infinite "
                                       "at step ", "; stopping without saving the bad state")
  assert not (tmp_path / "summary.json").exists()
  assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the file (No such file or directory)"),
    ("def get_config(:\n", "line 1: SyntaxError: "),
])
@pytest.mark.parametrize("program", ["big_transfer.main", "big_transfer.preflight"])
def test_a_missing_or_unparsable_config_file_is_one_line(tmp_path, program, content, message):
  recipe = tmp_path / "recipe.py"
  if content is not None:
    recipe.write_text(content)
  result = subprocess.run([sys.executable, "-m", program, f"--config={recipe}",
                           f"--workdir={tmp_path / 'run'}"], cwd=cli.REPO, text=True,
                          capture_output=True, env=cli.env_with_devices(1), timeout=300)
  cli.assert_fails_in_one_line(result, f"--config={recipe}: {message}")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    ("def get_sweep(arg):\n  return 1 / 0\n",
     "failed: ZeroDivisionError: division by zero (rerun with --verbosity=1 for the traceback)"),
    ("def get_sweep(arg:\n", "line 1: SyntaxError: "),
])
def test_a_sweep_file_that_fails_or_does_not_parse_is_one_line(tmp_path, content, message):
  sweep_file = tmp_path / "sweep.py"
  sweep_file.write_text(content)
  result = subprocess.run([sys.executable, "-m", "big_transfer.sweep", f"--sweep={sweep_file}",
                           f"--workdir={tmp_path / 'sweep'}"], cwd=cli.REPO, text=True,
                          capture_output=True, env=cli.env_with_devices(1), timeout=300)
  cli.assert_fails_in_one_line(result, str(sweep_file), message)
