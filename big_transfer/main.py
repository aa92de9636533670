"""Command line: `python -m big_transfer.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

Any config key can be overridden with `--config.KEY=VALUE`. Rerunning the same command on the
same workdir resumes from its latest checkpoint.
"""

import logging as std_logging
import re
import warnings

from absl import flags, logging

from big_transfer import command_line

# Console lines that only matter to a library's developers or that repeat another line.
_NOISE = (
    re.compile(r"is deprecated"),                     # e.g. TFDS's FeatureConnector.dtype, per read
    re.compile(r"has no dataset_info\.json"),         # TFDS preparing the built-in data set
    re.compile(r"^\[\d+\] (steps_per_sec|uptime)="),   # clu's progress; its notes line says it
)


def _quiet_console() -> None:
  """Shows big_transfer's lines and clu's progress and metrics; of other libraries, warnings
  and errors that are not noise. `--verbosity=1` (or higher) shows everything."""
  if flags.FLAGS.verbosity > 0:
    return
  warnings.filterwarnings("ignore", category=DeprecationWarning)

  def keep(record) -> bool:
    if "/big_transfer/" in record.pathname:
      return True
    if record.levelno < std_logging.WARNING and "/clu/" not in record.pathname:
      return False
    message = record.getMessage()
    return not any(pattern.search(message) for pattern in _NOISE)

  # ABSLHandler hands records to its python handler without consulting its own filters.
  logging.get_absl_handler().python_handler.addFilter(keep)


def run(config, workdir: str) -> int:
  """Trains and evaluates; returns the exit code: 0, or `command_line.PREEMPTED` when SIGTERM
  stopped the run after a checkpoint. A UserError propagates (`command_line.run` prints it)."""
  from big_transfer.training import loop  # noqa: PLC0415  (see `main`)
  summary = loop.train_and_evaluate(config, workdir)
  logging.info("Finished at step %d (%s).", summary["step"], summary["status"])
  if summary["status"] == "preempted":
    # Non-zero, so schedulers that restart failed jobs (SLURM --requeue, Kubernetes) rerun it.
    return command_line.PREEMPTED
  results = {k: v for k, v in summary.items() if k.startswith(("eval/", "evals/", "fewshot/"))}
  if results:
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in sorted(results.items())))
  return 0


def _define_flags() -> None:
  # Defined only when run as a program: importing the library registers no flags, so other
  # programs (preflight, sweep) can define their own --config.
  command_line.define_recipe_flag("configs/demo.py")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and summary.json "
                      "(local or gs://).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> int:
  del argv  # Flags only.
  _quiet_console()
  # Imported here, not at the top: a bad flag is reported without seconds of JAX, TensorFlow
  # and orbax imports.
  from big_transfer.launch import distributed  # noqa: PLC0415
  config = flags.FLAGS.config
  distributed.initialize(config.peer_timeout_s)
  with distributed.peers_watched():
    return run(config, flags.FLAGS.workdir)


if __name__ == "__main__":
  _define_flags()
  command_line.run(main)
