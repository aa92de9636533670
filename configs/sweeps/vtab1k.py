"""VTAB-1k: the 19 tasks, fine-tuned with BiT-HyperRule, 3 seeds each.

    python -m big_transfer.sweep --sweep=configs/sweeps/vtab1k.py:model=BiT-M-R50x1 \
        --workdir=/runs/vtab1k_r50x1 --set=data.data_dir=/data/tensorflow_datasets

Arguments: model (BiT-M-R50x1), init (the published weights; MODEL.npz in the directory the
sweep runs in unless given: a .npz or an upstream run's workdir), seeds (3). Each task trains
on its 1000 `train800val200` examples and reports `test` (big_transfer/data/vtab.py), so the
HyperRule gives every task 500 steps at batch 512 without MixUp, and 160 -> 128 px for the
tasks of small images (cifar100, svhn, eurosat, dSprites), 448 -> 384 px for the others.
results.md has each task's min <- median -> max over the seeds and the natural, specialized,
structured and overall means; vtab1k.png the tasks as bars.
"""

from big_transfer import sweep
from big_transfer.data import vtab
from big_transfer.recipes import schema as config_lib


def get_sweep(arg: str = "") -> sweep.Sweep:
  args = config_lib.parse_arg(arg, model="BiT-M-R50x1", init="", seeds=3)
  init = args["init"] or f"{args['model']}.npz"
  return sweep.Sweep(
      recipe=f"configs/hyperrule.py:model={args['model']},init={init}",
      axes={"dataset": tuple(vtab.TASKS), "config.seed": tuple(range(args["seeds"]))})
