"""Bad input as a new user gives it, through the programs: one `error:` line, nothing lost.

One finished smoke run is shared; each test that writes to a workdir works on its own copy.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

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
    ({"seed": 7}, "seed: checkpoint has 0, config has 7"),
])
def test_a_resume_of_another_run_is_refused_and_leaves_every_checkpoint(
    finished_smoke, tmp_path, synthetic_data_dir, override, field):
  workdir = _copy(finished_smoke, tmp_path)
  before = _listing(workdir / "checkpoints")
  refused = cli.run_main(workdir, synthetic_data_dir, **{"fewshot.shots": "()"}, **override)
  cli.assert_fails_in_one_line(refused, "The workdir holds checkpoints of a different run (",
                               field, "Use a new --workdir")
  assert "damaged" not in refused.stderr
  assert _listing(workdir / "checkpoints") == before
  if override == {"model": "BiT-S-R26x1"}:
    # After the refusal, the original command resumes where the run stood.
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
  for noise in ("Exception ignored", "exception was never retrieved", "Event loop is closed",
                "Traceback"):
    assert noise not in resumed.stderr, resumed.stderr[-3000:]
  # Not "damaged": the test's own tmp_path holds the word.
  warnings = [line for line in resumed.stderr.splitlines() if "is damaged or incomplete" in line]
  assert len(warnings) == 1, warnings
  assert f"Checkpoint {workdir}/checkpoints/6 is damaged or incomplete" in warnings[0]
  assert "Resuming from the checkpoint at step 3" in resumed.stderr
  assert len(list((workdir / "checkpoints").glob("6.damaged-*"))) == 1
  # The resumed run trains steps 4-6 again and saves a readable step 6.
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) \
      == [3, 6]


def test_a_non_finite_number_is_refused_before_any_data_is_read(tmp_path):
  # Every other number and a non-positive rate: tests/unit/test_recipes.py, test_optim.py.
  result = cli.run_main(tmp_path / "run", tmp_path / "no_data", lr="nan")
  cli.assert_fails_in_one_line(result, "lr must be a finite number, got nan (--config.lr).")
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


def _write_pngs(folder, count: int) -> None:
  folder.mkdir(parents=True)
  for i in range(count):
    (folder / f"{i}.png").write_bytes(tf.io.encode_png(np.full((8, 8, 3), 40 * i, np.uint8)).numpy())


@pytest.mark.parametrize("layout", [
    "images/*.png",         # The images in one sub-folder (labels in the file names): trained to
                            # loss 0 and accuracy 1 before.
    "flowers/daisy/*.png",  # folder: one level above the class folders.
])
def test_an_image_folder_with_one_class_is_refused_naming_it(tmp_path, synthetic_data_dir, layout):
  only = layout.split("/")[0]
  if layout.count("/") == 1:
    _write_pngs(tmp_path / "data" / only, 6)
  else:
    _write_pngs(tmp_path / "data" / only / "daisy", 3)
    _write_pngs(tmp_path / "data" / only / "rose", 3)
  result = cli.run_main(tmp_path / "run", synthetic_data_dir,
                        dataset=f"folder:{tmp_path / 'data'}", **{"fewshot.shots": "()"})
  cli.assert_fails_in_one_line(
      result, f"Image folder {tmp_path / 'data'} has one class folder, {only!r}: a classifier "
              "needs at least 2 classes, each in a sub-folder named after it.",
      f"(folder:{tmp_path / 'data' / only} if the classes are inside {only!r})")
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_tfds_data_set_with_one_class_is_refused_naming_it(tmp_path, synthetic_data_dir):
  from big_transfer.data import convert  # noqa: PLC0415  (TFDS only for this test)
  _write_pngs(tmp_path / "images" / "daisy", 4)
  convert.convert(f"folder:{tmp_path / 'images'}", "one_class", str(tmp_path / "tfds"),
                  split_percent="train=50,test=50", shards=1)
  result = cli.run_main(tmp_path / "run", tmp_path / "tfds", dataset="one_class")
  cli.assert_fails_in_one_line(result, "Data set 'one_class' has 1 class ['daisy'] in its 'label' "
                                       "feature: a classifier needs at least 2.")


def test_an_image_folder_of_unreadable_images_is_one_line_with_the_count(tmp_path,
                                                                         synthetic_data_dir):
  for name in ("ants", "bees"):
    (tmp_path / "images" / name).mkdir(parents=True)
    for i in range(3):  # What a clone without Git LFS holds.
      (tmp_path / "images" / name / f"{i}.jpg").write_text(
          "version https://git-lfs.github.com/spec/v1\n")
  result = cli.run_main(tmp_path / "run", synthetic_data_dir,
                        dataset=f"folder:{tmp_path / 'images'}")
  cli.assert_fails_in_one_line(
      result, f"No image in {tmp_path / 'images'} could be read: none of its 6 image files "
              f"decodes as a JPEG or PNG (e.g. {tmp_path / 'images' / 'ants' / '0.jpg'}).")
  assert "Skipping unreadable image" not in result.stderr


def test_a_workdir_scheme_tensorflow_lacks_names_the_supported_ones(tmp_path):
  supported = sorted(s for s in tf.io.gfile.get_registered_schemes() if s)
  result = cli.run_main("s3://x/bit", tmp_path / "no_data")
  line = cli.assert_fails_in_one_line(
      result, "--workdir=s3://x/bit: TensorFlow's file systems have no s3:// scheme; use a local "
              f"path or one of {', '.join(s + '://' for s in supported)}.")
  assert "gs://" in line  # Cloud TPU users' storage, on every TensorFlow build.


def test_a_sweep_workdir_of_such_a_scheme_is_one_line_before_the_sweep_file_is_read(tmp_path):
  # Each program's other paths are checked where they enter: tests/unit/test_path_schemes.py.
  result = subprocess.run([sys.executable, "-m", "big_transfer.sweep",
                           f"--sweep={tmp_path / 'missing.py'}", "--workdir=az://c/sweep"],
                          cwd=cli.REPO, text=True, capture_output=True,
                          env=cli.env_with_devices(1), timeout=300)
  cli.assert_fails_in_one_line(result, "--workdir=az://c/sweep: TensorFlow's file systems have no "
                                       "az:// scheme; use a local path or one of ")


def _export(workdir, output):
  return subprocess.run([sys.executable, "-m", "big_transfer.export", f"--workdir={workdir}",
                         f"--output={output}"], cwd=cli.REPO, text=True, capture_output=True,
                        env=cli.env_with_devices(1), timeout=300)


def test_an_export_inside_a_file_is_one_line_and_writes_nothing(finished_smoke, tmp_path):
  (tmp_path / "notes.txt").write_text("not a folder\n")
  before = _listing(tmp_path)
  result = _export(finished_smoke, tmp_path / "notes.txt" / "models" / "model.npz")
  cli.assert_fails_in_one_line(
      result, f"--output={tmp_path / 'notes.txt' / 'models' / 'model.npz'}: "
              f"{tmp_path / 'notes.txt'} is a file, not a folder; choose an --output inside a "
              "folder.")
  assert _listing(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_an_export_to_a_folder_that_cannot_be_written_is_one_line(finished_smoke, tmp_path):
  (tmp_path / "locked").mkdir(mode=0o555)
  result = _export(finished_smoke, tmp_path / "locked" / "model.npz")
  cli.assert_fails_in_one_line(
      result, f"cannot write in {tmp_path / 'locked'} (Permission denied); choose a folder you "
              "can write to.")
  assert not list((tmp_path / "locked").iterdir())


def test_a_text_file_as_init_is_not_an_npz_archive_and_no_pickle_hint(tmp_path,
                                                                      synthetic_data_dir):
  (tmp_path / "weights.npz").write_text("https://example.org/BiT-M-R50x1.npz\n")
  result = cli.run_main(tmp_path / "run", synthetic_data_dir, init=tmp_path / "weights.npz",
                        **{"fewshot.shots": "()"})
  line = cli.assert_fails_in_one_line(
      result, f"{tmp_path / 'weights.npz'} is not an .npz archive (not a zip file); BiT "
              "checkpoints are flat .npz archives of named arrays")
  assert "pickle" not in line
