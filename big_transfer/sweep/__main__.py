"""Command line: run a sweep here, list it, print its commands for a scheduler, or report it.

    python -m big_transfer.sweep --sweep=configs/sweeps/NAME.py[:ARG] --workdir=DIR
        [--dry_run] [--print_commands] [--only=REGEX] [--parallel=N] [--set=KEY=VALUE ...]
    python -m big_transfer.sweep --workdir=DIR --report

See docs/sweeps.md.
"""

import re
import sys

from absl import flags

from big_transfer import atomic, command_line, errors
from big_transfer.sweep import report, runner, spec

FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined only when run as a program, as big_transfer.main does: importing the package
  # registers no flags, so any program or test can import it beside main and preflight.
  flags.DEFINE_string("sweep", None, "Sweep file and argument, configs/sweeps/NAME.py[:ARG].")
  flags.DEFINE_string("workdir", None, "The sweep's directory: a sub-directory per member, "
                      "results.csv, results.md and the plots.")
  flags.DEFINE_bool("dry_run", False, "List the members and whether each would be skipped, "
                    "resumed, run or is excluded; run nothing.")
  flags.DEFINE_bool("print_commands", False, "Print one shell line per member "
                    "(python -m big_transfer.main ...) for a scheduler; run nothing.")
  flags.DEFINE_string("only", None, "Only the members whose name matches this regular "
                      "expression (re.search).")
  flags.DEFINE_integer("parallel", 1, "Members run at once, each its own process using every "
                       "device and core it sees.", lower_bound=1)
  flags.DEFINE_multi_string(
      "set", [], "SETTING=VALUE for every member, not in member names: config.KEY=VALUE adds "
      "--config.KEY=VALUE to every run (prerequisites too), e.g. "
      "config.data.data_dir=/data/tfds; NAME=VALUE sets the recipe argument NAME of the "
      "members, e.g. data_dir=/data/tfds.")
  flags.DEFINE_string("python", "python", "The interpreter named in printed commands.")
  flags.DEFINE_bool("report", False, "Rebuild results.csv, results.md and the plots from the "
                    "members' summaries; run nothing. With --sweep, first record its members in "
                    "WORKDIR/sweep.json (after a scheduler ran them).")
  flags.mark_flag_as_required("workdir")


def _overrides() -> dict[str, str]:
  overrides = {}
  for item in FLAGS.set:
    setting, sep, value = item.partition("=")
    if not sep or not setting:
      raise errors.ConfigError(f"--set={item}: expected SETTING=VALUE, such as "
                               "--set=config.data.data_dir=/data/tfds or --set=data_dir=/data.")
    overrides[setting] = value
  return overrides


def _selected(members: list[spec.Member]) -> list[spec.Member]:
  if FLAGS.only is None:
    return members
  try:
    pattern = re.compile(FLAGS.only)
  except re.error as e:
    raise errors.ConfigError(f"--only={FLAGS.only} is not a regular expression: {e}.") from None
  chosen = [m for m in members if pattern.search(m.name)]
  if not chosen:
    names = ", ".join(m.name for m in members[:5])
    raise errors.ConfigError(f"--only={FLAGS.only} matches none of the {len(members)} members "
                             f"({names}{', ...' if len(members) > 5 else ''}).")
  return chosen


def main(argv) -> int:
  del argv  # Flags only.
  workdir = FLAGS.workdir
  atomic.check_scheme(workdir, "--workdir")
  if FLAGS.report and not FLAGS.sweep:
    for path in report.write(workdir):
      print(path)
    return 0
  if not FLAGS.sweep:
    raise errors.ConfigError("--sweep=configs/sweeps/NAME.py[:ARG] is required (except with "
                             "--report).")
  sweep = spec.load(FLAGS.sweep)
  members = spec.expand(sweep, _overrides())
  prerequisites = spec.prerequisite_runs(sweep, _overrides())
  selected = _selected(members)
  if FLAGS.print_commands:
    for run in prerequisites:
      if runner.plan(run, workdir).action != "skip":
        print(f"run first (the members need it): {run.shell_line(workdir, FLAGS.python)}",
              file=sys.stderr)
    for member in selected:
      if not member.excluded:
        print(member.shell_line(workdir, FLAGS.python))
    return 0
  if FLAGS.dry_run:
    counts = {}
    for run in (*prerequisites, *selected):
      planned = runner.plan(run, workdir)
      counts[planned.action] = counts.get(planned.action, 0) + 1
      print(f"{run.name}: {planned.action}" + (f" ({planned.detail})" if planned.detail else ""))
    print(f"{len(prerequisites)} prerequisite(s) and {len(selected)} member(s): "
          + ", ".join(f"{n} {action}" for action, n in counts.items()) + ".")
    return 0
  command_of = lambda m: m.command(workdir, sys.executable)
  runner.write_manifest(workdir, FLAGS.sweep, sweep, members, prerequisites, command_of)
  exit_code = 0
  if not FLAGS.report:
    exit_code = runner.run(selected, prerequisites, workdir, command_of, FLAGS.parallel)
  for path in report.write(workdir):
    print(f"wrote {path}")
  return exit_code


if __name__ == "__main__":
  _define_flags()
  command_line.run(main)
