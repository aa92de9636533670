"""Few-shot transfer: cifar10, cifar100, oxford_iiit_pet and oxford_flowers102 with 1, 5, 10 and
25 examples per class, 3 seeds each, fine-tuned with BiT-HyperRule.

    python -m big_transfer.sweep --sweep=configs/sweeps/fewshot.py:model=BiT-M-R50x1 \
        --workdir=/runs/fewshot_r50x1 --set=data.data_dir=/data/tensorflow_datasets

Arguments: model (BiT-M-R50x1), init (MODEL.npz unless given), seeds (3). A seed draws its own K
examples per class from the training split and trains with its own order (configs/hyperrule.py);
with K x classes below 20k examples, each run is 500 steps at batch 512 without MixUp.

oxford_flowers102's training split holds exactly 10 images per class (TFDS `train`, the split
the HyperRule fine-tunes on), so its 25-shot members are excluded (results.md says why), and
its 10-shot members train on the whole split: their seeds differ only in the training order.
"""

from big_transfer import sweep
from big_transfer.recipes import schema as config_lib

DATASETS = ("cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102")
SHOTS = (1, 5, 10, 25)
# Images per class of oxford_flowers102's TFDS train split.
_FLOWERS_TRAIN_PER_CLASS = 10


def get_sweep(arg: str = "") -> sweep.Sweep:
  args = config_lib.parse_arg(arg, model="BiT-M-R50x1", init="", seeds=3)
  init = args["init"] or f"{args['model']}.npz"
  too_many = [k for k in SHOTS if k > _FLOWERS_TRAIN_PER_CLASS]
  return sweep.Sweep(
      recipe=f"configs/hyperrule.py:model={args['model']},init={init}",
      axes={"dataset": DATASETS, "examples_per_class": SHOTS,
            "config.seed": tuple(range(args["seeds"]))},
      exclude=tuple(sweep.Exclude(
          {"dataset": "oxford_flowers102", "examples_per_class": k},
          f"oxford_flowers102's train split has {_FLOWERS_TRAIN_PER_CLASS} images per class, "
          f"fewer than {k}") for k in too_many))
