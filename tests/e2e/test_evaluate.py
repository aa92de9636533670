"""`python -m big_transfer.evaluate` as users run it: a published-layout .npz on an ObjectNet
folder, eval.json and eval.md read back, exact counts over two processes, the one-line error of
an unprepared data set; and config.evals in a training run's summary."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli
import objectnet_folder
from big_transfer import models
from big_transfer.models import interop

CROP = 16


@pytest.fixture(scope="module")
def objectnet_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("objectnet-1.0")
  objectnet_folder.write(root)
  return root


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  """A random R14x1 with a 1000-way head in the published layout (shaped by tracing: compiling
  the init would cost seconds for values drawn again anyway)."""
  model = models.create("R14x1", num_classes=1000)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, CROP, CROP, 3)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), shapes)
  path = tmp_path_factory.mktemp("init") / "R14x1-i1k.npz"
  interop.save_bit_npz(params, path)
  return path


def _evaluate_args(init, out, evals, **config):
  return [sys.executable, "-m", "big_transfer.evaluate", f"--init={init}", f"--evals={evals}",
          f"--workdir={out}", *(f"--config.{k}={v}" for k, v in config.items())]


def _run(args, num_devices=2, **env):
  return subprocess.run(args, cwd=cli.REPO, text=True, capture_output=True, timeout=600,
                        env=cli.env_with_devices(num_devices, **env))


@pytest.fixture(scope="module")
def scored(npz, objectnet_dir, tmp_path_factory):
  """One process scoring the npz on the ObjectNet folder: the result the two-process run must
  reproduce."""
  out = tmp_path_factory.mktemp("one")
  done = _run(_evaluate_args(npz, out, f"objectnet:{objectnet_dir}", resolution=CROP,
                             batch_size=4))
  assert done.returncode == 0, done.stderr[-3000:]
  return out, done


def test_an_npz_is_scored_and_its_results_written_as_json_and_markdown(scored):
  out, done = scored
  results = json.loads((out / "eval.json").read_text())
  assert results["resolution"] == CROP and results["view"] == "upstream"
  assert results["model"].startswith("R14x1-i1k.npz (R14x1, 1000 classes)")
  scores = results["evaluators"]["objectnet"]
  assert set(scores) == {"accuracy", "top5", "examples", "accuracy_1000way", "classes"}
  assert scores["examples"] == 7 and scores["classes"] == 4
  assert 0 <= scores["accuracy"] <= scores["top5"] <= 1
  markdown = (out / "eval.md").read_text()
  assert f"| objectnet | {100 * scores['accuracy']:.2f} |" in markdown
  assert done.stdout.strip().splitlines()[-1].startswith(
      f"objectnet: top-1 {100 * scores['accuracy']:.2f}%")


def test_two_processes_count_every_image_once(npz, objectnet_dir, scored, tmp_path):
  port = cli.free_port()
  procs = [subprocess.Popen(
      _evaluate_args(npz, tmp_path / "two", f"objectnet:{objectnet_dir}", resolution=CROP,
                     batch_size=4),
      cwd=cli.REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=cli.env_with_devices(1, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                               JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i)) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  one = json.loads((scored[0] / "eval.json").read_text())["evaluators"]["objectnet"]
  two = json.loads((tmp_path / "two" / "eval.json").read_text())["evaluators"]["objectnet"]
  # 7 images over 2 hosts x 2 per host-batch: each host pads; every image counts once.
  assert two["examples"] == one["examples"] == 7
  assert two == pytest.approx(one)


def test_an_unprepared_data_set_fails_in_one_line_with_the_command_that_prepares_it(npz,
                                                                                  tmp_path):
  done = _run(_evaluate_args(npz, tmp_path / "out", "imagenet_a,imagenet2012_real",
                             data_dir=tmp_path / "tfds"))
  cli.assert_fails_in_one_line(done, "imagenet_a", f"tfds build imagenet_a --data_dir={tmp_path}")
  assert not (tmp_path / "out").exists()


def test_an_unknown_evaluator_fails_in_one_line(npz, tmp_path):
  done = _run(_evaluate_args(npz, tmp_path, "imagenet_r,imagenet-sketch"))
  cli.assert_fails_in_one_line(done, "'imagenet-sketch'", "Did you mean 'imagenet_sketch'")


def _thousand_class_folder(root) -> str:
  """An image folder of 1000 classes, one tiny image each: a head the evaluators can score."""
  import tensorflow as tf  # noqa: PLC0415  (the test's images only)
  image = tf.io.encode_png(np.full((8, 8, 3), 128, np.uint8)).numpy()
  for c in range(1000):
    (root / f"class{c:04d}").mkdir(parents=True)
    (root / f"class{c:04d}" / "0.png").write_bytes(image)
  return f"folder:{root}"


def test_a_training_run_writes_its_evaluators_into_the_summary(synthetic_data_dir, objectnet_dir,
                                                               tmp_path):
  """config.evals at eval_every_steps and at the end, in the summary; an unprepared set is
  named in one warning with the command that prepares it, and skipped."""
  dataset = _thousand_class_folder(tmp_path / "images")
  done = cli.run_main(tmp_path / "run", synthetic_data_dir, num_devices=2, **{
      "dataset": dataset, "data.eval_split": "train[:8]", "total_steps": 4,
      "eval_every_steps": 2, "fewshot.shots": "()",
      "evals": f'("objectnet:{objectnet_dir}","imagenet_sketch")'})
  assert done.returncode == 0, done.stderr[-3000:]
  warnings = [line for line in done.stderr.splitlines() if "Skipping 1 of the 2 evaluators" in line]
  assert len(warnings) == 1 and "tfds build imagenet_sketch" in done.stderr
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["evals/objectnet/examples"] == 7 and summary["evals/objectnet/classes"] == 4
  assert 0 <= summary["evals/objectnet/accuracy"] <= summary["evals/objectnet/top5"] <= 1
  assert not any(k.startswith("evals/imagenet_sketch") for k in summary)
  assert "evals/objectnet/accuracy=" in done.stdout


def test_a_head_that_is_not_imagenet_stops_the_run_before_training(synthetic_data_dir,
                                                                   objectnet_dir, tmp_path):
  done = cli.run_main(tmp_path, synthetic_data_dir, evals=f'("objectnet:{objectnet_dir}",)')
  cli.assert_fails_in_one_line(done, "the evaluators score ImageNet-1k's 1000")
  assert not (tmp_path / "checkpoints").exists()
