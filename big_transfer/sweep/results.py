"""A sweep's results: one row per member, and tables over seeds in the BiT README's style.

`collect(workdir)` reads every member's summary.json (and the sweep's record of its last
attempt); `to_csv` and `to_markdown` turn them into `results.csv` and `results.md`. Tables show
`min <- **median** -> max` over the sweep's seed axis for each setting: per data set and examples
per class, and for VTAB-1k per task and the natural / specialized / structured / overall means
(each mean taken per seed over the group's tasks, then min/median/max over seeds).
"""

import csv
import dataclasses
import io
import statistics
from collections.abc import Mapping, Sequence

from etils import epath

from big_transfer import command_line
from big_transfer.data import vtab
from big_transfer.sweep import runner, spec
from big_transfer.training import checkpoints

# The settings that place a member in a table's rows; the seed axis aggregates; the remaining
# settings (model, init, ...) are the columns.
DATASET_SETTINGS = ("dataset", "config.dataset")
SHOTS_SETTINGS = ("examples_per_class", "config.data.examples_per_class")
# What `examples_per_class` = 0 (or no such setting) means.
ALL_EXAMPLES = "all"


@dataclasses.dataclass(frozen=True)
class MemberResult:
  """What one member produced.

  Attributes:
    name: the member's name (its sub-directory).
    settings: setting -> value, in the member's order.
    shown: setting -> its label if the sweep gave it one (`Labelled`), else its value.
    fixed: the run's settings that do not name it, as the command line spells them.
    status: "completed", "failed", "preempted" (stopped with a checkpoint), "unfinished"
      (checkpoints but no end), "not run" or "excluded".
    step: the step its summary reached.
    wall_s: seconds of the attempt that ended last (run by the sweep).
    seconds_to_first_step: from its summary: setup, compilation and one step.
    started_at: when the attempt that ended last started (time.time()).
    error: the error line of a failure, or why it is excluded.
    metrics: the summary's `eval/*`, `evals/*` (config.evals: ImageNet and its robustness sets)
      and `fewshot/*` numbers (means over probe draws).
    notes: the recipe's decisions (`config.recipe_notes`).
  """
  name: str
  settings: Mapping[str, object]
  shown: Mapping[str, object]
  status: str
  fixed: Mapping[str, str] = dataclasses.field(default_factory=dict)
  step: int | None = None
  wall_s: float | None = None
  seconds_to_first_step: float | None = None
  started_at: float | None = None
  error: str | None = None
  metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
  notes: Mapping[str, object] = dataclasses.field(default_factory=dict)

  @property
  def labels(self) -> dict[str, str]:
    """setting -> how its value reads in the member's name and in tables."""
    return {name: spec.setting_label(value) for name, value in self.shown.items()}

  def setting(self, names: Sequence[str], default=None):
    """The value of the first of `names` the run has, naming it or not."""
    return next((where[n] for n in names for where in (self.settings, self.fixed)
                 if n in where), default)


def member_result(entry: Mapping, workdir) -> MemberResult:
  """The result of the manifest entry `entry` (runner.write_manifest)."""
  common = {"name": entry["name"], "fixed": entry["fixed"],
            "settings": {name: value for name, value, _ in entry["settings"]},
            "shown": {name: value if label is None else label
                      for name, value, label in entry["settings"]}}
  if entry.get("excluded"):
    return MemberResult(status="excluded", error=entry["excluded"], **common)
  run_dir = epath.Path(workdir) / entry["name"]
  summary = runner.read_json(run_dir / runner.SUMMARY) or {}
  outcome = runner.read_outcome(run_dir)
  if summary.get("status") == "completed":
    status = "completed"
  elif outcome and outcome.exit_code == command_line.PREEMPTED:
    status = "preempted"
  elif outcome and outcome.exit_code != 0:
    status = "failed"
  elif summary or checkpoints.saved_steps(run_dir):
    status = "unfinished"
  else:
    status = "not run"
  metrics = {key: value for key, value in summary.items()
             if key.startswith(("eval/", "evals/", "fewshot/")) and "/seed" not in key
             and isinstance(value, (int, float))}
  return MemberResult(
      status=status, step=summary.get("step"),
      wall_s=outcome.wall_s if outcome else None,
      seconds_to_first_step=summary.get("seconds_to_first_step"),
      started_at=outcome.started_at if outcome else None,
      error=outcome.error if outcome and status != "completed" else None,
      metrics=metrics, notes=summary.get("config", {}).get("recipe_notes", {}), **common)


def collect(workdir) -> tuple[dict, list[MemberResult]]:
  """(the sweep's manifest, a result per member in the manifest's order)."""
  manifest = runner.read_manifest(workdir)
  return manifest, [member_result(entry, workdir) for entry in manifest["members"]]


def to_csv(results: Sequence[MemberResult]) -> str:
  """A row per member: its settings, status, step, times, metrics, recipe notes and error."""
  settings = _union(r.settings for r in results)
  metrics = sorted(_union(r.metrics for r in results))
  notes = sorted(_union(r.notes for r in results))
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["name", *(spec.short_name(s) for s in settings), "status", "step", "wall_s",
                   "seconds_to_first_step", *metrics, *(f"notes.{n}" for n in notes), "error"])
  for r in results:
    writer.writerow([r.name, *(_cell(r.shown.get(s)) for s in settings), r.status,
                     _cell(r.step), _cell(r.wall_s), _cell(r.seconds_to_first_step),
                     *(_cell(r.metrics.get(m)) for m in metrics),
                     *(_cell(r.notes.get(n)) for n in notes), _cell(r.error)])
  return out.getvalue()


def _union(mappings) -> list[str]:
  keys = {}
  for mapping in mappings:
    keys.update(dict.fromkeys(mapping))
  return list(keys)


def _cell(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  if isinstance(value, (list, tuple)):
    return " ".join(str(v) for v in value)
  return str(value)


# --- Grouping over seeds. --------------------------------------------------------------------

def dataset_of(result: MemberResult) -> str | None:
  return result.setting(DATASET_SETTINGS)


def is_vtab(result: MemberResult) -> bool:
  return vtab.is_task(dataset_of(result) or "")


def shots_of(result: MemberResult) -> str:
  shots = result.setting(SHOTS_SETTINGS, 0)
  return str(shots) if shots else ALL_EXAMPLES


def variant_of(result: MemberResult, seed_axis: str) -> str:
  """The settings that are neither row nor seed, as a column label ("init=upstream")."""
  rest = [f"{spec.short_name(s)}={label}" for s, label in result.labels.items()
          if s not in (*DATASET_SETTINGS, *SHOTS_SETTINGS, seed_axis)]
  return ",".join(rest)


def seed_of(result: MemberResult, seed_axis: str):
  return result.settings.get(seed_axis)


def variants(results: Sequence[MemberResult], seed_axis: str) -> list[str]:
  return list(dict.fromkeys(variant_of(r, seed_axis) for r in results))


@dataclasses.dataclass(frozen=True)
class Spread:
  """A metric over seeds: the values of the members that completed, out of how many ran."""
  values: tuple[float, ...]
  expected: int
  excluded: str | None = None

  @property
  def median(self) -> float:
    return statistics.median(self.values)


def spread(results: Sequence[MemberResult], metric: str) -> Spread:
  """The metric over `results` (one setting's seeds)."""
  if results and all(r.status == "excluded" for r in results):
    return Spread((), len(results), excluded=results[0].error)
  counted = [r for r in results if r.status != "excluded"]
  values = tuple(r.metrics[metric] for r in counted
                 if r.status == "completed" and metric in r.metrics)
  return Spread(values, len(counted))


def is_percent(metric: str) -> bool:
  return "accuracy" in metric or metric.startswith("fewshot/")


def format_spread(s: Spread, percent: bool) -> str:
  """"min ← **median** → max" (BiT README), "**x**" for one value, with "(k/n)" when only k of
  n seeds completed."""
  if s.excluded:
    return "excluded"
  if not s.values:
    return f"— (0/{s.expected})"
  scale = 100.0 if percent else 1.0
  fmt = (lambda v: f"{v * scale:.1f}") if percent else (lambda v: f"{v:.4g}")
  text = (f"**{fmt(s.values[0])}**" if len(s.values) == 1 else
          f"{fmt(min(s.values))} ← **{fmt(s.median)}** → {fmt(max(s.values))}")
  return text if len(s.values) == s.expected else f"{text} ({len(s.values)}/{s.expected})"


def by_setting(results: Sequence[MemberResult], seed_axis: str
               ) -> dict[tuple[str | None, str, str], list[MemberResult]]:
  """(data set, examples per class, variant) -> the members of that setting (its seeds)."""
  groups = {}
  for r in results:
    groups.setdefault((dataset_of(r), shots_of(r), variant_of(r, seed_axis)), []).append(r)
  return groups


def vtab_means(results: Sequence[MemberResult], seed_axis: str, metric: str
               ) -> dict[str, dict[str, tuple[Spread, int]]]:
  """variant -> {"overall" or group: (the mean over its tasks, per seed, as a Spread; how many
  of its tasks have a value for some seed)}. A seed's mean needs every task of the group."""
  groups = {**vtab.GROUPS, "overall": tuple(t for tasks in vtab.GROUPS.values() for t in tasks)}
  table = {}
  for variant in variants([r for r in results if is_vtab(r)], seed_axis):
    mine = [r for r in results if is_vtab(r) and variant_of(r, seed_axis) == variant]
    per_task_seed = {(dataset_of(r), seed_of(r, seed_axis)): r.metrics[metric] for r in mine
                     if r.status == "completed" and metric in r.metrics}
    seeds = list(dict.fromkeys(seed_of(r, seed_axis) for r in mine))
    row = {}
    for group, tasks in groups.items():
      means = tuple(statistics.fmean(per_task_seed[(t, seed)] for t in tasks) for seed in seeds
                    if all((t, seed) in per_task_seed for t in tasks))
      covered = sum(any((t, seed) in per_task_seed for seed in seeds) for t in tasks)
      row[group] = (Spread(means, len(seeds)), covered)
    table[variant] = row
  return table


# --- Markdown. -------------------------------------------------------------------------------

def to_markdown(results: Sequence[MemberResult], sweep_name: str, seed_axis: str, metric: str,
                plot_names: Sequence[str] = ()) -> str:
  """results.md: counts, the tables, failures and exclusions, time to first step, plots."""
  percent = is_percent(metric)
  unit = " (%)" if percent else ""
  counts = {}
  for r in results:
    counts[r.status] = counts.get(r.status, 0) + 1
  lines = [f"# Sweep `{sweep_name}`", "",
           f"{len(results)} members: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
           "", f"Cells: `{metric}`{unit}, min ← **median** → max over `{seed_axis}` "
           "(one value: that run's); (k/n): only k of the n runs completed.", ""]
  tasks = [r for r in results if is_vtab(r)]
  others = [r for r in results if not is_vtab(r)]
  if others:
    lines += _setting_table(others, seed_axis, metric, percent)
  if tasks:
    lines += _vtab_tables(tasks, seed_axis, metric, percent)
  lines += _robustness_table(results)
  lines += _problems(results)
  lines += _first_step_times(results)
  if plot_names:
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plot_names] + [""]
  return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> list:
  return (["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] +
          ["| " + " | ".join(row) + " |" for row in rows] + [""])


def _column_names(names: Sequence[str], metric: str) -> list[str]:
  return [name or metric for name in names]


def _setting_table(results, seed_axis, metric, percent) -> list[str]:
  groups = by_setting(results, seed_axis)
  columns = variants(results, seed_axis)
  rows = list(dict.fromkeys((d, k) for d, k, _ in groups))
  body = [[f"`{d}`" if d else "", k,
           *(format_spread(spread(groups.get((d, k, v), []), metric), percent)
             if (d, k, v) in groups else "" for v in columns)] for d, k in rows]
  return ["## Per data set and examples per class", ""] + _table(
      ["Data set", "Ex/cls", *_column_names(columns, metric)], body,
      [":---", ":---:", *[":---:"] * len(columns)])


def _vtab_tables(results, seed_axis, metric, percent) -> list[str]:
  columns = variants(results, seed_axis)
  means = vtab_means(results, seed_axis, metric)
  group_names = ["overall", *vtab.GROUPS]
  sizes = {"overall": sum(len(t) for t in vtab.GROUPS.values()),
           **{g: len(t) for g, t in vtab.GROUPS.items()}}

  def mean_cell(variant, group):
    s, covered = means[variant][group]
    text = format_spread(s, percent)
    return text if covered == sizes[group] else f"{text}, {covered}/{sizes[group]} tasks"

  summary = [[name or metric, *(mean_cell(name, g) for g in group_names)] for name in columns]
  groups = by_setting(results, seed_axis)
  per_task = [[group, f"`{task}`",
               *(format_spread(spread(groups.get((task, shots, v), []), metric), percent)
                 for v in columns)]
              for group, tasks in vtab.GROUPS.items() for task in tasks
              for shots in dict.fromkeys(k for d, k, _ in groups if d == task)]
  return (["## VTAB-1k", "", "Group means: per seed the mean over the group's tasks (a seed "
           "counts once all of them completed), then min ← **median** → max over seeds.", ""] +
          _table(["", *(f"{g} ({sizes[g]} tasks)" for g in group_names)], summary,
                 [":---", *[":---:"] * len(group_names)]) +
          _table(["Group", "Task", *_column_names(columns, metric)], per_task,
                 [":---", ":---", *[":---:"] * len(columns)]))


def _robustness_table(results) -> list[str]:
  """One row per completed member with `config.evals` results: top-1 (%) on each evaluator, in
  the order the evaluators first appear."""
  evaluators = list(dict.fromkeys(
      key.split("/")[1] for r in results for key in r.metrics
      if key.startswith("evals/") and key.endswith("/accuracy")))
  rows = [[f"`{r.name}`", *(f"{100 * r.metrics[f'evals/{e}/accuracy']:.1f}"
                            if f"evals/{e}/accuracy" in r.metrics else "" for e in evaluators)]
          for r in results if r.status == "completed"
          and any(f"evals/{e}/accuracy" in r.metrics for e in evaluators)]
  if not rows:
    return []
  return ["## Evaluators (top-1 %, `config.evals`)", ""] + _table(
      ["Member", *[f"`{e}`" for e in evaluators]], rows, [":---", *[":---:"] * len(evaluators)])


def _problems(results) -> list[str]:
  lines = []
  incomplete = [r for r in results
                if r.status in ("failed", "preempted", "unfinished", "not run")]
  if incomplete:
    lines += ["## Not completed", ""] + [
        f"- `{r.name}`: {r.status}" + (f": `{r.error}`" if r.error else "")
        for r in incomplete] + [""]
  excluded = [r for r in results if r.status == "excluded"]
  if excluded:
    lines += ["## Excluded", ""] + [f"- `{r.name}`: {r.error}" for r in excluded] + [""]
  return lines


def _first_step_times(results) -> list[str]:
  """The first member to start against the later ones: what the shared compilation cache saves
  (each later member with the same program loads it instead of compiling)."""
  timed = sorted((r for r in results
                  if r.seconds_to_first_step is not None and r.started_at is not None),
                 key=lambda r: r.started_at)
  if len(timed) < 2:
    return []
  first, later = timed[0], [r.seconds_to_first_step for r in timed[1:]]
  return ["## Time to first step", "",
          "Setup, compilation and one step of each member's last attempt; members share JAX's "
          "persistent compilation cache.", "",
          f"- first member to start, `{first.name}`: {first.seconds_to_first_step:.1f} s",
          f"- the {len(later)} later members: median {statistics.median(later):.1f} s "
          f"(min {min(later):.1f}, max {max(later):.1f})", ""]
