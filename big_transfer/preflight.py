"""Pre-flight: compiles a run's train step for a TPU slice on any machine, before paying for it.

    python -m big_transfer.preflight --config=configs/NAME.py[:ARGS] --topology=v5litepod-16 \\
        [--config.KEY=VALUE ...] [--mfu=0.4]

Prints, per device, the bytes of the parameters and optimizer state, of the batch and of XLA's
temporaries, their total against the chip's HBM, the FLOPs of a step, and the step time and
images/s at an assumed utilization (`big_transfer.launch.preflight`). Exit code 0: the run fits;
1: it does not, or a setting is wrong, in one `error:` line that says what to change. Needs
libtpu (`pip install -e '.[tpu]'`), not a TPU; the data set need not be on this machine.
"""

import jax
import ml_collections
from absl import flags

from big_transfer import command_line, errors
from big_transfer.launch import preflight


def report(config: ml_collections.ConfigDict, topology: str, mfu: float) -> None:
  """Prints the report of `config` compiled for `topology`; raises a ConfigError (after the
  report) when the step does not fit."""
  result = preflight.estimate(config, topology, mfu)
  print(result.report())
  if not result.fits:
    raise errors.ConfigError(result.does_not_fit())


def _define_flags() -> None:
  # Defined only when run as a program, so importing the library registers no flags.
  command_line.define_recipe_flag("configs/bit_s.py")
  flags.DEFINE_string("topology", None, "The TPU slice: an accelerator type as gcloud names it "
                      "(v4-32, v5litepod-16, v5p-128, v6e-64) or a JAX topology (v4:2x2x4, "
                      "v5e:4x4).")
  flags.DEFINE_float("mfu", preflight.DEFAULT_MFU, "Assumed model FLOPs utilization: the "
                     "fraction of the chip's peak bf16 rate a step achieves, for the step time.")
  flags.mark_flags_as_required(["config", "topology"])


def main(argv) -> None:
  del argv  # Flags only.
  # The compile targets the slice's devices; local accelerators stay untouched (a training job
  # may be using them).
  jax.config.update("jax_platforms", "cpu")
  report(flags.FLAGS.config, flags.FLAGS.topology, flags.FLAGS.mfu)


if __name__ == "__main__":
  _define_flags()
  command_line.run(main)
