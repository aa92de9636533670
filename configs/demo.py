"""The README's main job: upstream pre-training of a small BiT on the built-in data.

    python -m big_transfer.main --config=configs/demo.py --workdir=/tmp/bit_demo
    python -m big_transfer.main --config=configs/demo.py:smoke --workdir=/tmp/bit_smoke

A few minutes on 2 CPU cores; it ends with the top-1 accuracy on the held-out upstream split and
few-shot linear-probe accuracy on the built-in downstream classes. `smoke` is a handful of steps
of a tiny model at a tiny resolution (under a minute, compile included).
"""

from big_transfer import errors
from big_transfer.recipes import scaling
from big_transfer.recipes import schema as config_lib


def get_config(arg: str = ""):
  config = config_lib.base()
  # R14 (one unit per stage) at 32 px: small enough to learn something in minutes on a CPU.
  config.model = "BiT-S-R14x1"
  config.dataset = "bit_synthetic/upstream"
  config.data.recipe = "upstream"
  config.data.crop = 32
  config.data.shuffle_buffer = 2_000
  config.batch_size = 32
  config.lr = scaling.scaled_by_batch(config, 0.02, 32)
  config.total_steps = scaling.steps_for_examples(config, 300 * 32)
  config.warmup_steps = scaling.steps_for_examples(config, 30 * 32)
  config.decay_fractions = (0.5, 0.75, 275 / 300)
  config.weight_decay = 1e-4
  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  config.eval_batch_size = 256
  config.fewshot.datasets = {"bit_synthetic/downstream": ("train", "test")}
  config.fewshot.shots = (1, 5, 10)
  if arg == "smoke":
    config.data.crop = 16
    config.batch_size = 16
    config.total_steps = 6
    config.warmup_steps = 2
    config.decay_fractions = (4 / 6,)
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.eval_batch_size = 64
    config.fewshot.shots = (1, 5)
    config.fewshot.seeds = 2
  elif arg:
    raise errors.ConfigError(f"configs/demo.py takes no argument or 'smoke', got {arg!r}.")
  return config
