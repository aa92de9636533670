"""A sweep's results from hand-made member summaries (real VTAB data is not available here):
the CSV, the tables in the BiT README's style (min ← median → max over seeds, the VTAB-1k group
means) and the plots, computed here with NumPy from the summaries; and the runner's pieces that
need no training (error lines, stopping on SIGTERM)."""

import csv
import io
import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from matplotlib import image

from big_transfer import command_line, sweep
from big_transfer.data import vtab
from big_transfer.sweep import report, runner, spec

SEEDS = (0, 1, 2)


def _settings(**settings):
  return [[name.replace("__", "."), value, None] for name, value in settings.items()]


def _member(workdir, name, settings, accuracy=None, failed=None, started_at=None,
            first_step_s=None, excluded=None):
  """A member as a finished sweep leaves it: manifest entry, summary.json, outcome."""
  run_dir = workdir / name
  if accuracy is not None:
    run_dir.mkdir(parents=True)
    (run_dir / runner.SUMMARY).write_text(json.dumps({
        "status": "completed", "step": 500, "eval/accuracy": accuracy, "eval/loss": 1.0,
        "seconds_to_first_step": first_step_s,
        "config": {"recipe_notes": {"crop": 128, "total_steps": 500}}}))
  if failed is not None or started_at is not None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runner.OUTCOME).write_text(json.dumps({
        "exit_code": 1 if failed else 0, "error": failed, "started_at": started_at or 0.0,
        "wall_s": 60.0}))
  return {"name": name, "settings": settings, "fixed": {}, "excluded": excluded, "command": []}


def _write_manifest(workdir, members):
  (workdir / runner.MANIFEST).write_text(json.dumps({
      "sweep": "hand-made", "recipe": "configs/hyperrule.py", "seed_axis": "config.seed",
      "metric": "eval/accuracy", "members": members, "prerequisites": []}))


def _cells(markdown: str, first_cells: list[str]) -> list[str]:
  """The cells of the table row whose first cells are `first_cells`."""
  for line in markdown.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells[:len(first_cells)] == first_cells:
      return cells[len(first_cells):]
  raise AssertionError(f"no row {first_cells} in\n{markdown}")


def _expected(values) -> str:
  values = 100 * np.asarray(values)
  return f"{values.min():.1f} ← **{np.median(values):.1f}** → {values.max():.1f}"


@pytest.fixture(scope="module")
def vtab_sweep(tmp_path_factory):
  """19 tasks x 3 seeds x 2 models; model B's dtd seed 2 failed."""
  workdir = tmp_path_factory.mktemp("vtab_sweep")
  rng = np.random.default_rng(0)
  accuracy, members = {}, []
  for model in ("A", "B"):
    for task in vtab.TASKS:
      for seed in SEEDS:
        name = f"dataset={task.replace('/', '.')},model={model},seed={seed}"
        settings = _settings(dataset=task, model=model, config__seed=seed)
        if (model, task, seed) == ("B", "vtab/dtd", 2):
          members.append(_member(workdir, name, settings, failed="error: out of memory"))
          continue
        accuracy[model, task, seed] = float(rng.uniform(0.3, 0.95))
        members.append(_member(workdir, name, settings, accuracy[model, task, seed]))
  _write_manifest(workdir, members)
  report.write(workdir)
  return workdir, accuracy


def test_vtab_group_means_are_per_seed_means_over_the_groups_tasks(vtab_sweep):
  workdir, accuracy = vtab_sweep
  markdown = (workdir / report.MARKDOWN_NAME).read_text()
  groups = {"overall": tuple(vtab.TASKS), **vtab.GROUPS}
  assert [len(groups[g]) for g in ("overall", "natural", "specialized", "structured")] == \
      [19, 7, 4, 8]
  for model in ("A", "B"):
    cells = _cells(markdown, [f"model={model}"])
    for cell, (group, tasks) in zip(cells, groups.items()):
      complete = [s for s in SEEDS if all((model, t, s) in accuracy for t in tasks)]
      means = [np.mean([accuracy[model, t, s] for t in tasks]) for s in complete]
      expected = _expected(means)
      if len(complete) < len(SEEDS):
        expected += f" ({len(complete)}/{len(SEEDS)})"
      assert cell == expected, (model, group)
  # Model B's failed dtd seed leaves two seeds for the overall and natural means only.
  overall, natural, specialized, structured = _cells(markdown, ["model=B"])
  assert overall.endswith("(2/3)") and natural.endswith("(2/3)")
  assert "(" not in specialized + structured


def test_vtab_tasks_show_min_median_max_over_seeds(vtab_sweep):
  workdir, accuracy = vtab_sweep
  markdown = (workdir / report.MARKDOWN_NAME).read_text()
  for group, tasks in vtab.GROUPS.items():
    for task in tasks:
      cell_a, cell_b = _cells(markdown, [group, f"`{task}`"])
      assert cell_a == _expected([accuracy["A", task, s] for s in SEEDS])
      seeds_b = [s for s in SEEDS if ("B", task, s) in accuracy]
      assert cell_b == _expected([accuracy["B", task, s] for s in seeds_b]) + (
          "" if len(seeds_b) == 3 else " (2/3)")
  assert "- `dataset=vtab.dtd,model=B,seed=2`: failed: `error: out of memory`" in markdown


def test_the_csv_has_a_row_per_member_with_settings_status_metrics_and_error(vtab_sweep):
  workdir, accuracy = vtab_sweep
  rows = list(csv.DictReader(io.StringIO((workdir / report.CSV_NAME).read_text())))
  assert len(rows) == 2 * 19 * 3
  assert list(rows[0])[:4] == ["name", "dataset", "model", "seed"]
  for row in rows:
    key = (row["model"], row["dataset"], int(row["seed"]))
    if key in accuracy:
      assert row["status"] == "completed" and row["error"] == ""
      assert float(row["eval/accuracy"]) == pytest.approx(accuracy[key], rel=1e-5)
      assert (row["notes.crop"], row["step"]) == ("128", "500")
    else:
      assert (row["status"], row["error"], row["eval/accuracy"]) == (
          "failed", "error: out of memory", "")


def _png(path):
  pixels = image.imread(path)
  assert path.stat().st_size > 10_000
  return pixels


def test_the_vtab_bar_chart_is_written(vtab_sweep):
  workdir, _ = vtab_sweep
  pixels = _png(workdir / "vtab1k.png")
  assert pixels.shape[0] > 400 and pixels.shape[1] > 1000
  assert pixels[..., :3].std() > 0.05  # Not a blank canvas.
  assert "![vtab1k.png](vtab1k.png)" in (workdir / report.MARKDOWN_NAME).read_text()


def test_fewshot_table_and_plot_with_an_excluded_setting_and_first_step_times(tmp_path):
  rng = np.random.default_rng(1)
  accuracy, members, started = {}, [], 1000.0
  for dataset in ("cifar10", "oxford_flowers102"):
    for shots in (1, 5, 25):
      for seed in SEEDS:
        name = f"dataset={dataset},examples_per_class={shots},seed={seed}"
        settings = _settings(dataset=dataset, examples_per_class=shots, config__seed=seed)
        if dataset == "oxford_flowers102" and shots == 25:
          members.append(_member(tmp_path, name, settings, excluded="10 images per class"))
          continue
        started += 100
        accuracy[dataset, shots, seed] = float(rng.uniform(0.2, 0.9))
        members.append(_member(tmp_path, name, settings, accuracy[dataset, shots, seed],
                               started_at=started, first_step_s=30.0 if started == 1100 else
                               10.0 + seed))
  members.append(_member(tmp_path, "dataset=cifar10,examples_per_class=10,seed=0",
                         _settings(dataset="cifar10", examples_per_class=10, config__seed=0)))
  _write_manifest(tmp_path, members)
  written = report.write(tmp_path)
  markdown = (tmp_path / report.MARKDOWN_NAME).read_text()
  for (dataset, shots) in {(d, k) for d, k, _ in accuracy}:
    [cell] = _cells(markdown, [f"`{dataset}`", str(shots)])
    assert cell == _expected([accuracy[dataset, shots, s] for s in SEEDS])
  assert _cells(markdown, ["`oxford_flowers102`", "25"]) == ["excluded"]
  assert _cells(markdown, ["`cifar10`", "10"]) == ["— (0/1)"]
  assert "- `dataset=oxford_flowers102,examples_per_class=25,seed=0`: 10 images per class" in \
      markdown
  assert "- `dataset=cifar10,examples_per_class=10,seed=0`: not run" in markdown
  assert "- first member to start, `dataset=cifar10,examples_per_class=1,seed=0`: 30.0 s" in \
      markdown
  # The later members took 10, 11 and 12 s: median 11.
  assert "later members: median 11.0 s (min 10.0, max 12.0)" in markdown
  plot = tmp_path / "accuracy_vs_examples_per_class.png"
  assert plot in written
  assert _png(plot).shape[1] > 1000  # Two panels side by side.


@pytest.mark.parametrize("exit_code, output, expected", [
    (0, "eval/accuracy=0.9\n", None),
    (1, "I1128 train.py] Topology\nerror: Data set 'x' is missing.\n",
     "error: Data set 'x' is missing."),
    (1, "Traceback (most recent call last):\n  File \"a.py\"\nKeyError: 'step'\n\n",
     "KeyError: 'step'"),
    (143, "W Preempted: saved the checkpoint at step 3\n",
     "stopped by SIGTERM after saving a checkpoint; rerun the sweep to resume"),
    (-9, "I step 3\n", "killed by SIGKILL"),
])
def test_a_failed_members_error_line_is_mains_error_or_its_tracebacks_last_line(
    exit_code, output, expected):
  assert runner.error_line(exit_code, output) == expected


def test_sigterm_stops_the_running_members_with_their_save_and_starts_no_more(tmp_path):
  members = spec.expand(sweep.Sweep(recipe="configs/demo.py", axes={"config.seed": (0, 1, 2)}))
  # A member that saves and exits 143 on SIGTERM, as big_transfer.main does; its log says
  # "training 42" once it listens (the command in the log's header does not).
  fake_run = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
              "print('training', 6 * 7, flush=True)\n"
              "time.sleep(120)\n")
  logs = [tmp_path / m.name / runner.LOG for m in members[:2]]

  def preempt_once_both_train():
    deadline = time.time() + 60
    while time.time() < deadline and not all(
        log.exists() and "training 42" in log.read_text() for log in logs):
      time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=preempt_once_both_train, daemon=True).start()
  exit_code = runner.run(members, [], tmp_path, lambda m: [sys.executable, "-c", fake_run],
                         parallel=2)
  assert exit_code == command_line.PREEMPTED
  outcomes = [runner.read_outcome(tmp_path / m.name) for m in members]
  assert [o.exit_code for o in outcomes[:2]] == [143, 143]
  assert outcomes[0].error.startswith("stopped by SIGTERM after saving a checkpoint")
  assert outcomes[2] is None and not (tmp_path / members[2].name).exists()
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # The sweep's handler is gone.


def test_failing_members_stop_no_other_and_are_listed_with_their_error_line(tmp_path, capsys):
  definition = sweep.Sweep(recipe="configs/demo.py", axes={"config.seed": (0, 1, 2)})
  members = spec.expand(definition)
  # Stand-ins for big_transfer.main: a user error, a crash, then a run that completes.
  programs = [
      "print('I train.py] Topology'); print('error: Data set x is missing.'); raise SystemExit(1)",
      "raise KeyError('step')",
      "import json, sys; open(sys.argv[1], 'w').write(json.dumps("
      "{'status': 'completed', 'step': 4, 'eval/accuracy': 0.25}))"]
  commands = {m.name: [sys.executable, "-c", program, str(tmp_path / m.name / runner.SUMMARY)]
              for m, program in zip(members, programs)}
  command_of = lambda m: commands[m.name]
  runner.write_manifest(tmp_path, "failing", definition, members, [], command_of)
  assert runner.run(members, [], tmp_path, command_of) == 1
  assert "2 member(s) failed: seed=0, seed=1." in capsys.readouterr().out
  report.write(tmp_path)
  rows = list(csv.DictReader(io.StringIO((tmp_path / report.CSV_NAME).read_text())))
  assert [(r["name"], r["status"], r["eval/accuracy"], r["error"]) for r in rows] == [
      ("seed=0", "failed", "", "error: Data set x is missing."),
      ("seed=1", "failed", "", "KeyError: 'step'"),
      ("seed=2", "completed", "0.25", "")]
  markdown = (tmp_path / report.MARKDOWN_NAME).read_text()
  assert "- `seed=0`: failed: `error: Data set x is missing.`" in markdown
  assert "- `seed=1`: failed: `KeyError: 'step'`" in markdown


def test_members_evaluated_on_robustness_sets_get_a_column_per_evaluator(tmp_path):
  rng = np.random.default_rng(3)
  scores = {name: {"imagenet2012": rng.uniform(0.5, 0.8), "imagenet_a": rng.uniform(0, 0.3)}
            for name in ("r50", "r101")}
  members = []
  for name, by_eval in scores.items():
    members.append(_member(tmp_path, name, _settings(config__model=name), accuracy=0.7))
    summary = json.loads((tmp_path / name / runner.SUMMARY).read_text())
    summary.update({f"evals/{e}/accuracy": a for e, a in by_eval.items()})
    summary.update({f"evals/{e}/examples": 100 for e in by_eval})
    (tmp_path / name / runner.SUMMARY).write_text(json.dumps(summary))
  members.append(_member(tmp_path, "r152", _settings(config__model="r152"), accuracy=0.7))
  _write_manifest(tmp_path, members)
  report.write(tmp_path)
  markdown = (tmp_path / report.MARKDOWN_NAME).read_text()
  assert "| Member | `imagenet2012` | `imagenet_a` |" in markdown
  for name, by_eval in scores.items():
    assert _cells(markdown, [f"`{name}`"]) == [f"{100 * by_eval[e]:.1f}"
                                               for e in ("imagenet2012", "imagenet_a")]
  with pytest.raises(AssertionError, match="no row"):
    _cells(markdown, ["`r152`"])  # No evaluator results: no row.
