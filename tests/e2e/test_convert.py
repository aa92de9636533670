"""`python -m big_transfer.data.convert` as a user runs it, then training on what it wrote."""

import json
import subprocess
import sys

import numpy as np
import tensorflow as tf

import cli


def _convert(*args):
  return subprocess.run([sys.executable, "-m", "big_transfer.data.convert", *args], cwd=cli.REPO,
                        text=True, capture_output=True, timeout=300, env=cli.env_with_devices(1))


def test_convert_a_folder_to_array_record_then_train_on_it(tmp_path):
  """array_record: the format read by random access; tfrecord sets train in every other test
  (the built-in data set) and in tests/unit/test_data_convert.py."""
  rng = np.random.default_rng(0)
  for name in ("ant", "bee"):
    (tmp_path / "images" / name).mkdir(parents=True)
    for i in range(12):
      pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
      (tmp_path / "images" / name / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
  data_dir = tmp_path / "tfds"
  result = _convert(f"--source=folder:{tmp_path / 'images'}", "--name=tiny_images",
                    f"--data_dir={data_dir}", "--split_percent=train=75,test=25", "--shards=2",
                    "--format=array_record")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Train with --config.dataset=tiny_images --config.data.data_dir={data_dir}" in (
      result.stdout)
  report = json.loads((data_dir / "tiny_images" / "1.0.0" / "conversion_report.json").read_text())
  assert sum(report["examples"].values()) == 24
  assert any(path.name.endswith(".array_record-00001-of-00002")
             for path in (data_dir / "tiny_images" / "1.0.0").iterdir())

  run = cli.run_main(tmp_path / "run", data_dir, dataset="tiny_images", total_steps=2,
                     batch_size=4, eval_batch_size=8, checkpoint_every_steps=2,
                     log_every_steps=1, **{"fewshot.shots": "()"})
  assert run.returncode == 0, run.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["step"] == 2
  assert summary["eval/examples"] == report["examples"]["test"]


def test_a_bad_source_is_one_error_line(tmp_path):
  result = _convert(f"--source=folder:{tmp_path / 'missing'}", "--name=x",
                    f"--data_dir={tmp_path}")
  cli.assert_fails_in_one_line(result, f"Image folder {tmp_path / 'missing'} does not exist")
