"""Distillation sweeps (configs/distill.py): the paper's small-data grid, and the built-in demo.

    python -m big_transfer.sweep \
        --sweep=configs/sweeps/distill.py:flowers=R152x2_T_flowers128.npz,pet=R152x2_T_pet128.npz \
        --workdir=/runs/distill_small --set=config.data.data_dir=/data/tensorflow_datasets
    python -m big_transfer.sweep --sweep=configs/sweeps/distill.py:demo \
        --workdir=/tmp/bit_distill_sweep

Small data (big_vision's configs/proj/distill/bigsweep_flowers_pet.py, after Beyer et al., CVPR
2022): oxford_flowers102 and oxford_iiit_pet, each distilled from its own teacher, x the recipe's
fast / medium / long variants (their epochs, temperature, rate and weight decay: Fig. 3 / Tab. 4
of the paper) x seeds. Arguments: flowers, pet (the teachers, as configs/distill.py's `teacher=`:
';'-separated paths; defaults big_vision's published R152x2_T_flowers128.npz and
R152x2_T_pet128.npz in the directory the sweep runs in), student (BiT-S-R50x1), seeds (1).

`demo` is docs/distillation.md's demonstration on the built-in data: the demo's teacher
(configs/demo.py) trained first into WORKDIR/teacher, then the distillation demo's student
(configs/distill.py:demo) distilled from it (`distill.teacher=demo`) and the same student, steps
and optimizer on the labels (`distill.teacher=labels`). `smoke` is a handful of steps of the same
at 16 px (the tests use it).
"""

from big_transfer import sweep
from big_transfer.recipes import schema as config_lib
from big_transfer.sweep import spec
from big_transfer.training import distill

# The small-data variants of configs/distill.py, in the paper's order.
VARIANTS = ("fast", "medium", "long")
_TEACHER = "teacher"


def get_sweep(arg: str = "") -> sweep.Sweep:
  if arg in ("demo", "smoke"):
    return _demo(smoke=arg == "smoke")
  args = config_lib.parse_arg(arg, flowers="R152x2_T_flowers128.npz",
                              pet="R152x2_T_pet128.npz", student="BiT-S-R50x1", seeds=1)
  teachers = {"oxford_flowers102": args["flowers"], "oxford_iiit_pet": args["pet"]}
  return sweep.Sweep(
      recipe=f"configs/distill.py:student={args['student']}",
      # One member per data set, each with its teacher (named in tables by its file).
      members=tuple({"dataset": dataset, "teacher": sweep.Labelled(_label(path), path)}
                    for dataset, path in teachers.items()),
      axes={"variant": VARIANTS, "config.seed": tuple(range(args["seeds"]))})


def _label(teachers: str) -> str:
  """A teacher spec as it reads in member names: the files' names without directories."""
  names = (path.rstrip("/").rsplit("/", 1)[-1] for path in distill.teacher_paths(teachers))
  return "+".join(spec.setting_label(name) for name in names if name)


def _demo(smoke: bool) -> sweep.Sweep:
  # The smoke sweep's teacher skips its few-shot probes, which no table reports.
  teacher = (sweep.Prerequisite(_TEACHER, "configs/demo.py:smoke", {"fewshot.shots": ()})
             if smoke else sweep.Prerequisite(_TEACHER, "configs/demo.py"))
  base = ({"config.data.crop": 16, "config.batch_size": 16, "config.total_steps": 4,
           "config.warmup_steps": 1, "config.log_every_steps": 2,
           "config.checkpoint_every_steps": 2} if smoke else {})
  return sweep.Sweep(
      recipe="configs/distill.py:demo",
      prerequisites=(teacher,),
      axes={"config.distill.teacher": (
          sweep.Labelled("demo", f"{sweep.WORKDIR}/{_TEACHER}"), sweep.Labelled("labels", ""))},
      base={**base, "config.fewshot.shots": ()})
