"""Sweeps run end to end on the built-in data (`python -m big_transfer.sweep` in subprocesses):
half of the demo's smoke sweep (its own upstream model, then 5 examples per class from it and
from scratch, 2 seeds each) shared by the tests, a rerun that skips, and a printed command run
through a shell to resume an unfinished member. A failing member is isolated in
test_sweep_results.py (stand-in processes that fail at once), and the tables and plots of more
settings are checked there on hand-made summaries: every run here costs seconds of imports."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image

import cli
from big_transfer.recipes import hyperrule
from big_transfer.sweep import report, runner, spec

SMOKE = "configs/sweeps/demo.py:smoke"
SELECTED = "examples_per_class=5"


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
  """The smoke sweep's upstream run, then its 5-shot members (2 inits x 2 seeds), run once.

  One member at a time (--parallel is tested in tests/unit/test_sweep_results.py): two members
  started together both compile the programs that the cache serves to the later ones."""
  workdir = tmp_path_factory.mktemp("smoke_sweep")
  result = _sweep(workdir, synthetic_data_dir, f"--only={SELECTED}")
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  return workdir, result


def _selected(workdir) -> list[str]:
  return [m["name"] for m in _members(workdir) if SELECTED in m["name"]]


def test_the_smoke_sweep_trains_its_upstream_model_then_the_selected_members(smoke_sweep):
  workdir, result = smoke_sweep
  assert _summary(workdir / "upstream")["status"] == "completed"
  members = [m["name"] for m in _members(workdir)]
  assert len(members) == 8 and len(_selected(workdir)) == 4
  assert result.stdout.count(": completed in ") == 5
  for name in members:
    if name not in _selected(workdir):
      assert not (workdir / name).exists(), name
      continue
    assert _summary(workdir / name)["step"] == 4
    log = (workdir / name / runner.LOG).read_text()
    from_upstream = f"Initialized from {workdir / 'upstream'}" in log
    assert from_upstream == ("init=upstream" in name), name


def test_results_csv_has_a_row_per_member_with_its_metrics_and_hyperrule_decisions(smoke_sweep):
  workdir, _ = smoke_sweep
  rows = list(csv.DictReader(io.StringIO((workdir / report.CSV_NAME).read_text())))
  assert [row["name"] for row in rows] == [m["name"] for m in _members(workdir)]
  precrop, crop = hyperrule.resolution((64, 64))  # bit_synthetic's images.
  for row in rows:
    if row["name"] not in _selected(workdir):
      assert (row["status"], row["eval/accuracy"]) == ("not run", "")
      continue
    summary = _summary(workdir / row["name"])
    assert (row["status"], row["step"]) == ("completed", "4")
    assert row["init"] in ("upstream", "scratch")
    assert float(row["eval/accuracy"]) == pytest.approx(summary["eval/accuracy"], rel=1e-5)
    assert float(row["seconds_to_first_step"]) > 0 and float(row["wall_s"]) > 0
    # The rule's choice beside what the demo's overrides made of it.
    assert row["notes.resolution_rule"].endswith(f"resize to {precrop}, random crop {crop}")
    assert (row["notes.precrop"], row["notes.crop"]) == ("18", "16")
    assert (row["notes.total_steps"], row["notes.batch_size"]) == ("4", "16")
    assert row["notes.train_examples"] == str(5 * 10)
    assert row["notes.fewshot_seed"] == row["seed"]


def test_results_md_shows_min_median_max_over_seeds_per_init(smoke_sweep):
  workdir, _ = smoke_sweep
  markdown = (workdir / report.MARKDOWN_NAME).read_text()
  assert "| Data set | Ex/cls | init=upstream | init=scratch |" in markdown
  [row] = [line for line in markdown.splitlines()
           if line.startswith("| `bit_synthetic/downstream` | 5 |")]
  cells = [c.strip() for c in row.strip("|").split("|")][2:]
  for init, cell in zip(("upstream", "scratch"), cells):
    values = 100 * np.array([_summary(workdir / f"examples_per_class=5,init={init},"
                                                f"seed={seed}")["eval/accuracy"]
                             for seed in (0, 1)])
    assert cell == (f"{values.min():.1f} ← **{np.median(values):.1f}** → "
                    f"{values.max():.1f}")
  # The members --only left out are listed, and their cells say none of 2 seeds ran.
  assert "| `bit_synthetic/downstream` | 1 | — (0/2) | — (0/2) |" in markdown
  assert "- `examples_per_class=1,init=scratch,seed=1`: not run" in markdown


def test_results_md_gives_the_time_to_first_step_of_the_first_and_later_members(smoke_sweep):
  workdir, _ = smoke_sweep
  started = sorted((runner.read_outcome(workdir / name).started_at, name)
                   for name in _selected(workdir))
  first = started[0][1]
  seconds = _summary(workdir / first)["seconds_to_first_step"]
  markdown = (workdir / report.MARKDOWN_NAME).read_text()
  assert f"- first member to start, `{first}`: {seconds:.1f} s" in markdown
  assert "- the 3 later members: median " in markdown


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
  report.write(workdir)
  before = (workdir / report.CSV_NAME).read_text()
  (workdir / report.CSV_NAME).unlink()
  rerun = _sweep(workdir, synthetic_data_dir, f"--only={SELECTED}")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  progress = [line for line in rerun.stdout.splitlines() if line.startswith("[")]
  assert len(progress) == 5
  assert all(re.search(r": skip \(completed at step \d+\)$", line) for line in progress)
  for name in _selected(workdir):
    assert (workdir / name / runner.LOG).read_text().count("=== ") == 1
  assert (workdir / report.CSV_NAME).read_text() == before


def test_report_rebuilds_the_results_from_the_summaries_alone(smoke_sweep):
  workdir, _ = smoke_sweep
  report.write(workdir)
  before = {name: (workdir / name).read_bytes() for name in (report.CSV_NAME,
                                                            report.MARKDOWN_NAME)}
  for name in before:
    (workdir / name).unlink()
  result = subprocess.run([sys.executable, "-m", "big_transfer.sweep", f"--workdir={workdir}",
                           "--report"], cwd=cli.REPO, text=True, capture_output=True,
                          timeout=300, env=cli.env_with_devices(1))
  assert result.returncode == 0, result.stderr[-3000:]
  assert {name: (workdir / name).read_bytes() for name in before} == before


def test_a_printed_command_resumes_an_unfinished_member_as_the_sweep_ran_it(smoke_sweep,
                                                                            synthetic_data_dir):
  workdir, _ = smoke_sweep
  name = "examples_per_class=5,init=scratch,seed=1"
  accuracy = _summary(workdir / name)["eval/accuracy"]
  # As a run killed after its checkpoint at step 2 leaves its workdir: no summary, no step 4.
  (workdir / name / runner.SUMMARY).unlink()
  shutil.rmtree(workdir / name / "checkpoints" / "4")
  [member] = [m for m in spec.expand(spec.load(f"{cli.REPO}/{SMOKE}")) if m.name == name]
  assert runner.plan(member, workdir) == runner.Plan("resume", "from the checkpoint at step 2")
  printed = _sweep(workdir, synthetic_data_dir, "--print_commands", f"--only=^{name}$")
  assert printed.returncode == 0, printed.stderr[-3000:]
  [line] = printed.stdout.splitlines()
  # As a scheduler runs it: a shell, `python` of the active environment on PATH.
  env = cli.env_with_devices(1, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
  result = subprocess.run(line, shell=True, cwd=cli.REPO, text=True, capture_output=True,
                          timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resuming from the checkpoint at step 2" in result.stderr
  summary = _summary(workdir / name)
  assert (summary["status"], summary["step"]) == ("completed", 4)
  # Steps 3 and 4 again on the same batches from the same state: the sweep's own result.
  assert summary["eval/accuracy"] == pytest.approx(accuracy, abs=1e-6)
  assert runner.plan(member, workdir).action == "skip"
