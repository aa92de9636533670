"""BiT's upstream recipe (BiT-S, BiT-M, BiT-L): the paper's optimization, input and probes.

The schema's defaults (`schema.base()`) are this recipe's batch and rate, so a config that sets
neither trains as upstream does.
"""

import ml_collections

from big_transfer.recipes import scaling
from big_transfer.training import optim

# The paper's upstream optimization: SGD with momentum at global batch 4096, 0.03 per 256
# examples, linear warm-up over the examples of 5000 such steps, weight decay 1e-4.
BATCH_SIZE = 4096
LR_PER_256 = 0.03
WARMUP_STEPS = 5000
WEIGHT_DECAY = 1e-4


def set_recipe(config: ml_collections.ConfigDict, train_examples: int, epochs: int,
               decay_epochs: tuple[int, ...]) -> None:
  """The paper's upstream optimization for a data set of `train_examples` images.

  SGD momentum 0.9 at global batch 4096, lr 0.03 per 256 examples, warm-up over the examples of
  5000 steps at batch 4096, `epochs` epochs, x0.1 after each of `decay_epochs`, weight decay
  1e-4, random inception crop to 224 and flip; evaluation and few-shot probes on a central crop.
  All of it follows `--config.batch_size`.
  """
  config.batch_size = BATCH_SIZE
  config.lr = scaling.scaled_by_batch(config, LR_PER_256, 256)
  config.total_steps = scaling.steps_for_examples(config, epochs * train_examples)
  config.warmup_steps = scaling.steps_for_examples(config, WARMUP_STEPS * BATCH_SIZE)
  config.decay_fractions = tuple(e / epochs for e in decay_epochs)
  config.momentum = optim.MOMENTUM
  config.weight_decay = WEIGHT_DECAY
  config.data.recipe = "upstream"
  config.data.crop = 224
  config.data.shuffle_buffer = 250_000  # Per host, as big_vision's BiT configs.
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoint_every = 10_000
  config.fewshot.datasets = FEWSHOT


# The downstream sets upstream runs probe (the paper's few-shot figures). Flowers' train split
# has 10 images per class, so its K are drawn from train+validation (20 per class).
FEWSHOT = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "oxford_iiit_pet": ("train", "test"),
    "oxford_flowers102": ("train+validation", "test"),
}

# The ImageNet-1k sets upstream runs on ImageNet are scored on (big_vision's BiT ImageNet configs
# evaluate minival, validation, v2 and ReaL); BiT-M scores its 21k head on them through a label
# map. BiT-L's JFT head has no map to ImageNet, so its recipe sets none.
IMAGENET_EVALS = ("imagenet2012_minival", "imagenet2012", "imagenet_v2", "imagenet2012_real")
