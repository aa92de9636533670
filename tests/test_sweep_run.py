"""Sweeps run end to end on the built-in data (`python -m big_transfer.sweep` in subprocesses):
the demo's smoke sweep (its own upstream model against scratch) shared by most tests, a rerun
that skips, a printed command run through a shell, and a failing member beside one resumed
after SIGTERM."""

import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image

import cli
from big_transfer import hyperrule
from big_transfer.sweep import report, runner

SMOKE = "configs/sweeps/demo.py:smoke"


def _sweep(workdir, data_dir, *flags, sweep=SMOKE) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "big_transfer.sweep", f"--sweep={sweep}", f"--workdir={workdir}",
       f"--set=data_dir={data_dir}", f"--set=config.data.data_dir={data_dir}", *flags],
      cwd=cli.REPO, text=True, capture_output=True, timeout=1800, env=cli.env_with_devices(1))


def _summary(run_dir) -> dict:
  return json.loads((run_dir / runner.SUMMARY).read_text())


def _members(workdir) -> list[dict]:
  return json.loads((workdir / runner.MANIFEST).read_text())["members"]


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory, synthetic_data_dir):
  """The demo's smoke sweep, run once: 2 shots x 2 inits x 2 seeds after its upstream run."""
  workdir = tmp_path_factory.mktemp("smoke_sweep")
  result = _sweep(workdir, synthetic_data_dir, "--parallel=2")
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  return workdir, result


def test_the_smoke_sweep_trains_its_upstream_model_then_every_member(smoke_sweep):
  workdir, result = smoke_sweep
  assert _summary(workdir / "upstream")["status"] == "completed"
  members = _members(workdir)
  assert len(members) == 8
  assert result.stdout.count(": completed in ") == 9
  for member in members:
    assert _summary(workdir / member["name"])["step"] == 4
    log = (workdir / member["name"] / runner.LOG).read_text()
    from_upstream = f"Initialized from {workdir / 'upstream'}" in log
    assert from_upstream == ("init=upstream" in member["name"]), member["name"]


def test_results_csv_has_a_row_per_member_with_its_metrics_and_hyperrule_decisions(smoke_sweep):
  workdir, _ = smoke_sweep
  rows = list(csv.DictReader(io.StringIO((workdir / report.CSV_NAME).read_text())))
  assert [row["name"] for row in rows] == [m["name"] for m in _members(workdir)]
  precrop, crop = hyperrule.resolution((64, 64))  # bit_synthetic's images.
  for row in rows:
    summary = _summary(workdir / row["name"])
    assert (row["status"], row["step"]) == ("completed", "4")
    assert row["init"] in ("upstream", "scratch")
    assert float(row["eval/accuracy"]) == pytest.approx(summary["eval/accuracy"], rel=1e-5)
    assert float(row["seconds_to_first_step"]) > 0 and float(row["wall_s"]) > 0
    # The rule's choice beside what the demo's overrides made of it.
    assert row["notes.resolution_rule"].endswith(f"resize to {precrop}, random crop {crop}")
    assert (row["notes.precrop"], row["notes.crop"]) == ("18", "16")
    assert (row["notes.total_steps"], row["notes.batch_size"]) == ("4", "16")
    shots = int(row["examples_per_class"])
    assert row["notes.train_examples"] == str(shots * 10)
    assert row["notes.fewshot_seed"] == row["seed"]


def test_results_md_shows_min_median_max_over_seeds_per_shots_and_init(smoke_sweep):
  workdir, _ = smoke_sweep
  markdown = (workdir / report.MARKDOWN_NAME).read_text()
  for shots in (1, 5):
    [row] = [line for line in markdown.splitlines()
             if line.startswith(f"| `bit_synthetic/downstream` | {shots} |")]
    cells = [c.strip() for c in row.strip("|").split("|")][2:]
    for init, cell in zip(("upstream", "scratch"), cells):
      values = 100 * np.array([_summary(workdir / f"examples_per_class={shots},init={init},"
                                                  f"seed={seed}")["eval/accuracy"]
                               for seed in (0, 1)])
      assert cell == (f"{values.min():.1f} ← **{np.median(values):.1f}** → "
                      f"{values.max():.1f}")
  assert "| Data set | Ex/cls | init=upstream | init=scratch |" in markdown


def test_results_md_gives_the_time_to_first_step_of_the_first_and_later_members(smoke_sweep):
  workdir, _ = smoke_sweep
  started = sorted((runner.read_outcome(workdir / m["name"]).started_at, m["name"])
                   for m in _members(workdir))
  first = started[0][1]
  seconds = _summary(workdir / first)["seconds_to_first_step"]
  markdown = (workdir / report.MARKDOWN_NAME).read_text()
  assert f"- first member to start, `{first}`: {seconds:.1f} s" in markdown
  assert "- the 7 later members: median " in markdown


def test_the_accuracy_plot_is_a_png_of_both_inits(smoke_sweep):
  workdir, _ = smoke_sweep
  path = workdir / "accuracy_vs_examples_per_class.png"
  pixels = image.imread(path)
  assert path.stat().st_size > 10_000 and pixels.shape[0] > 300 and pixels.shape[1] > 500
  assert pixels[..., :3].std() > 0.05
  assert f"![{path.name}]({path.name})" in (workdir / report.MARKDOWN_NAME).read_text()


def test_a_members_log_and_summary_hold_the_hyperrule_decisions(smoke_sweep):
  workdir, _ = smoke_sweep
  run_dir = workdir / "examples_per_class=5,init=upstream,seed=1"
  notes = _summary(run_dir)["config"]["recipe_notes"]
  assert notes["examples_counted"].startswith("5 per class x 10 classes")
  assert notes["schedule_rule"] == ("50 examples, below 20000: 500 steps at batch 512, warm-up "
                                    "100, x0.1 after steps 200, 300, 400")
  assert notes["mixup_rule"] == "50 examples, below 20000: no MixUp"
  assert (notes["splits"], notes["fewshot_seed"]) == ("train on 'train', evaluate on 'test'", 1)
  log = (run_dir / runner.LOG).read_text()
  assert "Recipe decisions (config.recipe_notes):" in log
  assert f"  schedule_rule: {notes['schedule_rule']}" in log


def test_a_rerun_skips_every_finished_member_and_rebuilds_the_same_results(smoke_sweep,
                                                                             synthetic_data_dir):
  workdir, _ = smoke_sweep
  before = (workdir / report.CSV_NAME).read_text()
  (workdir / report.CSV_NAME).unlink()
  rerun = _sweep(workdir, synthetic_data_dir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  progress = [line for line in rerun.stdout.splitlines() if line.startswith("[")]
  assert len(progress) == 9
  assert all(re.search(r": skip \(completed at step \d+\)$", line) for line in progress)
  for member in _members(workdir):
    assert (workdir / member["name"] / runner.LOG).read_text().count("=== ") == 1
  assert (workdir / report.CSV_NAME).read_text() == before


def test_report_rebuilds_the_results_from_the_summaries_alone(smoke_sweep):
  workdir, _ = smoke_sweep
  before = {name: (workdir / name).read_bytes() for name in (report.CSV_NAME,
                                                            report.MARKDOWN_NAME)}
  for name in before:
    (workdir / name).unlink()
  result = subprocess.run([sys.executable, "-m", "big_transfer.sweep", f"--workdir={workdir}",
                           "--report"], cwd=cli.REPO, text=True, capture_output=True,
                          timeout=300, env=cli.env_with_devices(1))
  assert result.returncode == 0, result.stderr[-3000:]
  assert {name: (workdir / name).read_bytes() for name in before} == before


def test_a_printed_command_runs_as_it_is_through_a_shell(smoke_sweep, synthetic_data_dir,
                                                           tmp_path):
  workdir, _ = smoke_sweep
  name = "examples_per_class=5,init=scratch,seed=1"
  printed = _sweep(tmp_path, synthetic_data_dir, "--print_commands", f"--only=^{name}$")
  assert printed.returncode == 0, printed.stderr[-3000:]
  [line] = printed.stdout.splitlines()
  # As a scheduler runs it: a shell, `python` of the active environment on PATH.
  env = cli.env_with_devices(1, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
  result = subprocess.run(line, shell=True, cwd=cli.REPO, text=True, capture_output=True,
                          timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(tmp_path / name)
  assert (summary["status"], summary["step"]) == ("completed", 4)
  # The same member as the sweep ran it: same data, seed and program.
  assert summary["eval/accuracy"] == pytest.approx(
      _summary(workdir / name)["eval/accuracy"], abs=1e-6)


_FAILING_AND_LONGER = """
from big_transfer import sweep


def get_sweep(arg=""):
  return sweep.Sweep(
      recipe="configs/hyperrule.py:model=BiT-S-R14x1,init=",
      axes={"dataset": ("bit_synthetic/downstream", "no_such_dataset")},
      base={"config.data.precrop": 18, "config.data.crop": 16, "config.batch_size": 16,
            "config.total_steps": 20, "config.warmup_steps": 1, "config.log_every_steps": 1,
            "config.checkpoint_every_steps": 2, "config.fewshot.shots": ()})
"""


def test_a_failing_member_stops_no_other_and_an_interrupted_one_resumes(tmp_path,
                                                                          synthetic_data_dir):
  sweep_file = tmp_path / "failing.py"
  sweep_file.write_text(_FAILING_AND_LONGER)
  workdir = tmp_path / "sweep"
  good = "dataset=bit_synthetic.downstream"
  printed = _sweep(workdir, synthetic_data_dir, "--print_commands", f"--only={good}",
                   f"--python={sys.executable}", sweep=sweep_file)
  [line] = printed.stdout.splitlines()
  # Preempt the good member once it trains: it saves a checkpoint and exits 143.
  member = subprocess.Popen(shlex.split(line), cwd=cli.REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=cli.env_with_devices(1))
  for output in member.stdout:
    if re.search(r"\[\d+\] train/", output):
      member.send_signal(signal.SIGTERM)
      break
  member.stdout.read()
  assert member.wait(timeout=600) == runner.PREEMPTED_EXIT_CODE
  stopped_at = _summary(workdir / good)["step"]
  assert _summary(workdir / good)["status"] == "preempted" and stopped_at < 20

  dry = _sweep(workdir, synthetic_data_dir, "--dry_run", sweep=sweep_file)
  assert dry.stdout.splitlines()[:2] == [
      f"{good}: resume (from the checkpoint at step {stopped_at})", "dataset=no_such_dataset: run"]

  result = _sweep(workdir, synthetic_data_dir, sweep=sweep_file)
  assert result.returncode == 1
  assert re.search(r"dataset=no_such_dataset: failed \(exit code 1\) after \d+ s: error: TFDS "
                   "has no data set 'no_such_dataset'", result.stdout), result.stdout
  assert f"Resuming from the checkpoint at step {stopped_at}" in (
      workdir / good / runner.LOG).read_text()
  assert (_summary(workdir / good)["status"], _summary(workdir / good)["step"]) == (
      "completed", 20)
  rows = {row["name"]: row for row in csv.DictReader(
      io.StringIO((workdir / report.CSV_NAME).read_text()))}
  assert (rows[good]["status"], rows[good]["error"]) == ("completed", "")
  bad = rows["dataset=no_such_dataset"]
  assert bad["status"] == "failed" and bad["eval/accuracy"] == ""
  assert bad["error"].startswith("error: TFDS has no data set 'no_such_dataset'")
  assert f"- `dataset=no_such_dataset`: failed: `{bad['error']}`" in (
      workdir / report.MARKDOWN_NAME).read_text()
