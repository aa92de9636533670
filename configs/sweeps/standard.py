"""The paper's standard transfer sets on all their training examples, with BiT-HyperRule.

    python -m big_transfer.sweep --sweep=configs/sweeps/standard.py:model=BiT-M-R50x1 \
        --workdir=/runs/standard_r50x1 --set=data.data_dir=/data/tensorflow_datasets

Arguments: model (BiT-M-R50x1), init (MODEL.npz unless given), seeds (1). cifar10 and cifar100
(49k examples after the released code's 2% minival: 10k steps, MixUp, 160 -> 128 px),
oxford_iiit_pet and oxford_flowers102 (500 steps, no MixUp, 448 -> 384 px) and imagenet2012
(1.27M examples: 20k steps, MixUp, 448 -> 384 px). `released_resolution` is the recipe's
(configs/hyperrule.py); imagenet2012 needs its archives prepared by hand (docs/data.md).
"""

from big_transfer import sweep
from big_transfer.recipes import schema as config_lib

DATASETS = ("cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102", "imagenet2012")


def get_sweep(arg: str = "") -> sweep.Sweep:
  args = config_lib.parse_arg(arg, model="BiT-M-R50x1", init="", seeds=1)
  init = args["init"] or f"{args['model']}.npz"
  return sweep.Sweep(
      recipe=f"configs/hyperrule.py:model={args['model']},init={init}",
      axes={"dataset": DATASETS, "config.seed": tuple(range(args["seeds"]))})
