"""Command line: `python -m big_transfer.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

Any config key can be overridden with `--config.KEY=VALUE`. Rerunning the same command on the
same workdir resumes from its latest checkpoint.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from big_transfer import distributed, errors, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/demo.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and "
                               "summary.json (local or gs://).")
flags.mark_flags_as_required(["config", "workdir"])

# 128 + SIGTERM, what a process killed by the preemption signal reports.
PREEMPTED_EXIT_CODE = 143



def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config value reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for keys the locked config does not have or bad values.
    bad = [arg for arg in argv[1:] if arg.startswith("--config.")]
    print(f"error: cannot apply {' '.join(bad)}: {e}. Every --config.KEY must be a key of the "
          "recipe (see big_transfer/config.py) with a value of its type.", file=sys.stderr)
  sys.exit(1)


def _quiet_libraries() -> None:
  """Keeps INFO lines of big_transfer and clu (progress, metrics), WARNING+ of everything else."""
  ours = ("big_transfer", "clu")

  def keep(record) -> bool:
    return record.levelno >= std_logging.WARNING or any(f"/{p}/" in record.pathname for p in ours)

  # ABSLHandler hands records to its python handler without consulting its own filters.
  logging.get_absl_handler().python_handler.addFilter(keep)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  _quiet_libraries()
  distributed.initialize()
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except errors.UserError as e:  # Anything else keeps its traceback.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  logging.info("Finished at step %d (%s).", summary["step"], summary["status"])
  if summary["status"] == "preempted":
    # Non-zero, so schedulers that restart failed jobs (SLURM --requeue, Kubernetes) rerun it.
    sys.exit(PREEMPTED_EXIT_CODE)
  results = {k: v for k, v in summary.items() if k.startswith(("eval/", "fewshot/"))}
  if results:
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in sorted(results.items())))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
