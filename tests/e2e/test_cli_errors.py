"""What the user can fix ends in one `error:` line before training; everything else keeps its
traceback."""

import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bit_reference
import cli
from big_transfer import command_line, errors, main
from big_transfer.training import loop


def test_unknown_config_key_is_named(tmp_path, synthetic_data_dir):
  cli.assert_fails_in_one_line(cli.run_main(tmp_path, synthetic_data_dir, learning_rate=0.1),
                               "--config.learning_rate: the recipe has no key 'learning_rate'")


def test_unknown_data_set_is_named_with_close_names(tmp_path, synthetic_data_dir):
  cli.assert_fails_in_one_line(cli.run_main(tmp_path, synthetic_data_dir, dataset="cifar11"),
                               "TFDS has no data set 'cifar11'", "Did you mean ", "'cifar10',")


def test_missing_image_folder_is_named(tmp_path, synthetic_data_dir):
  cli.assert_fails_in_one_line(
      cli.run_main(tmp_path, synthetic_data_dir, dataset=f"folder:{tmp_path}/nothing"),
      f"Image folder {tmp_path}/nothing does not exist")


def test_indivisible_batch_names_the_batch_and_the_devices(tmp_path, synthetic_data_dir):
  cli.assert_fails_in_one_line(
      cli.run_main(tmp_path, synthetic_data_dir, num_devices=8, batch_size=12),
      "Global batch size 12 is not divisible by grad_accum_steps 1 x 8 batch devices")


def test_mesh_that_does_not_match_the_devices_names_both(tmp_path, synthetic_data_dir):
  cli.assert_fails_in_one_line(
      cli.run_main(tmp_path, synthetic_data_dir, num_devices=8, **{"mesh.data": 3}),
      "Mesh data=3 x fsdp=1 does not fit 8 devices")


@pytest.mark.parametrize("override, message", [
    ({"total_steps": -5}, "total_steps must be >= 1, got -5"),
    ({"model_dtype": "float16"}, "model_dtype must be one of ['bfloat16', 'float32'], got "
                                 "'float16'"),
    ({"fewshot.shots": "abc"}, "fewshot.shots must be a tuple of ints"),
])
def test_a_value_no_run_can_use_fails_before_any_data_is_read(tmp_path, override, message):
  # An empty data_dir: reading the data would prepare the built-in set, which takes seconds.
  result = cli.run_main(tmp_path / "run", tmp_path / "no_data", **override)
  cli.assert_fails_in_one_line(result, message)
  assert not (tmp_path / "no_data").exists()


def test_pretrained_weights_of_another_architecture_are_named_with_both(tmp_path,
                                                                         synthetic_data_dir):
  np.savez(tmp_path / "r50.npz", **bit_reference.random_published_weights(50, 1, num_classes=10))
  result = cli.run_main(tmp_path / "run", synthetic_data_dir, init=tmp_path / "r50.npz")
  cli.assert_fails_in_one_line(
      result, "The pretrained weights are of an R50x1 (units per stage 3, 4, 6, 3), the model is "
              "an R14x1 (units per stage 1, 1, 1, 1)", "--config.init_partial=true")
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (tmp_path / "run" / "checkpoints").iterdir())


def test_a_missing_eval_split_fails_before_training(tmp_path, synthetic_data_dir):
  # One sub-folder per class: the only split is "train", so the recipe's "test" is missing.
  for label in ("ants", "bees"):
    (tmp_path / "images" / label).mkdir(parents=True)
    for i in range(4):
      (tmp_path / "images" / label / f"{i}.png").write_bytes(
          tf.io.encode_png(np.full((8, 8, 3), 40 * i, np.uint8)).numpy())
  result = cli.run_main(tmp_path / "run", synthetic_data_dir,
                        dataset=f"folder:{tmp_path / 'images'}", total_steps=3)
  cli.assert_fails_in_one_line(result, "has no split 'test'", "train_split='train[:90%]'")
  assert "train/loss" not in result.stderr


def _run_main_in_process(argv):
  return command_line.exit_code(lambda argv: main.run(config=None, workdir="unused"), argv)


def test_user_errors_are_one_line_and_exit_1(monkeypatch, capsys):
  def fail(config, workdir):
    raise errors.DataError("Data set 'x' is not prepared.")

  monkeypatch.setattr(loop, "train_and_evaluate", fail)
  assert _run_main_in_process(["main"]) == 1
  assert capsys.readouterr().err == "error: Data set 'x' is not prepared.\n"


def test_a_preempted_run_exits_143_and_positional_arguments_are_refused(monkeypatch, capsys):
  monkeypatch.setattr(loop, "train_and_evaluate",
                      lambda config, workdir: {"step": 3, "status": "preempted"})
  assert _run_main_in_process(["main"]) == command_line.PREEMPTED == 143
  assert _run_main_in_process(["main", "extra"]) == 1
  assert capsys.readouterr().err.splitlines() == [
      "error: Unexpected arguments: extra; every program takes flags only (--help lists them)."]


def test_ctrl_c_is_the_line_of_the_innermost_block_it_left_and_exit_130(monkeypatch, capsys):
  def interrupted(config, workdir):
    with errors.on_interrupt("Interrupted (Ctrl-C) while outside."):
      with errors.on_interrupt("Interrupted (Ctrl-C) while inside."):
        raise KeyboardInterrupt

  monkeypatch.setattr(loop, "train_and_evaluate", interrupted)
  assert _run_main_in_process(["main"]) == command_line.INTERRUPTED == 130
  # Outside every block: the line true of every program. raise_signal delivers it to this
  # thread, so the KeyboardInterrupt is raised before the call returns (os.kill may be taken by
  # another thread and handled only after it).
  monkeypatch.setattr(loop, "train_and_evaluate",
                      lambda config, workdir: signal.raise_signal(signal.SIGINT))
  assert _run_main_in_process(["main"]) == 130
  assert capsys.readouterr().err.splitlines() == [
      "Interrupted (Ctrl-C) while inside.",
      "Interrupted (Ctrl-C) before the program finished: a file is written whole or not at all, "
      "so nothing already written is lost; rerun the same command."]


def test_ctrl_c_while_the_recipe_loads_is_one_line_and_exit_130(tmp_path):
  # The recipe interrupts itself as it is loaded, i.e. while the flags are read.
  recipe = tmp_path / "interrupted.py"
  recipe.write_text("import signal\nsignal.raise_signal(signal.SIGINT)\n")
  result = subprocess.run([sys.executable, "-m", "big_transfer.main", f"--config={recipe}",
                           f"--workdir={tmp_path / 'run'}"], cwd=cli.REPO, text=True,
                          capture_output=True, timeout=120, env=cli.env_with_devices(1))
  assert result.returncode == command_line.INTERRUPTED, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert result.stderr.splitlines()[-1].startswith("Interrupted (Ctrl-C) before the program "
                                                   "finished"), result.stderr[-3000:]
  assert not (tmp_path / "run").exists()


def test_ctrl_c_while_a_program_imports_its_modules_is_one_line_and_exit_130():
  # As `python -m big_transfer.export` sees it while importing the package, before the program's
  # own imports (seconds of JAX and TensorFlow), into which the Ctrl-C then falls.
  starting = ("import os, signal, sys, time; sys.argv[0] = '-m'; "
              "sys.orig_argv = [sys.executable, '-m', 'big_transfer.export']; "
              "import big_transfer; os.kill(os.getpid(), signal.SIGINT); time.sleep(60)")
  result = subprocess.run([sys.executable, "-c", starting], cwd=cli.REPO, text=True,
                          capture_output=True, timeout=120, env=cli.env_with_devices(1))
  assert result.returncode == command_line.INTERRUPTED, result.stderr[-3000:]
  assert result.stderr.splitlines() == [
      "Interrupted (Ctrl-C) before the program finished: a file is written whole or not at all, "
      "so nothing already written is lost; rerun the same command."]


@pytest.mark.parametrize("internal", [ValueError("a bug of ours"), OSError("transient")])
def test_any_other_exception_keeps_its_traceback(monkeypatch, internal):
  def fail(config, workdir):
    raise internal

  monkeypatch.setattr(loop, "train_and_evaluate", fail)
  with pytest.raises(type(internal), match=str(internal)):
    _run_main_in_process(["main"])


def _programs() -> list[str]:
  """Every `python -m` program of the package: the modules that run when executed."""
  package = cli.REPO / "big_transfer"
  return sorted(".".join(path.relative_to(cli.REPO).with_suffix("").parts).removesuffix(
      ".__main__") for path in package.rglob("*.py")
      if 'if __name__ == "__main__":' in path.read_text())


def test_the_programs_are_found():
  assert {"big_transfer.main", "big_transfer.export", "big_transfer.evaluate",
          "big_transfer.preflight", "big_transfer.sweep", "big_transfer.data.convert"} <= set(
              _programs())


@pytest.mark.parametrize("program", _programs())
def test_every_program_reports_a_bad_flag_in_one_line_with_exit_1(program, tmp_path):
  # Through command_line.run: absl alone would print "FATAL Flags parsing error" and its usage.
  result = subprocess.run([sys.executable, "-m", program, "--no_such_flag=1"], cwd=cli.REPO,
                          text=True, capture_output=True, env=cli.env_with_devices(1),
                          timeout=300)
  line = cli.assert_fails_in_one_line(result)
  assert line == "error: Unknown command line flag 'no_such_flag'", result.stderr[-2000:]
  assert "FATAL" not in result.stderr and "USAGE" not in result.stderr


def test_importing_every_program_registers_no_flags():
  # Each program defines its flags when run; importing two of them (as the test suite, a sweep
  # or a notebook does) must not fail with absl's DuplicateFlagError.
  code = ("from absl import flags; import big_transfer.main, big_transfer.preflight, "
          "big_transfer.export; print(sorted(n for n in ('config', 'workdir', 'topology', "
          "'output') if n in flags.FLAGS))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"
