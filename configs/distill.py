"""Distillation of BiT teachers into a student: "patient and consistent" function matching.

    python -m big_transfer.main \
        --config=configs/distill.py:teacher=R152x2_T_224.npz,student=BiT-S-R50x1,dataset=imagenet2012 \
        --workdir=gs://BUCKET/distill_i1k
    python -m big_transfer.main \
        --config=configs/distill.py:teacher=R152x2_T_flowers128.npz,dataset=oxford_flowers102,variant=fast \
        --workdir=/tmp/distill_flowers
    python -m big_transfer.main --config=configs/distill.py:demo,teacher=/tmp/bit_demo \
        --workdir=/tmp/bit_distill_demo

Arguments: teacher (';'-separated: published-layout .npz, a run's workdir, a .msgpack export;
several teachers average their probabilities), student (a model name), dataset (imagenet2012,
oxford_flowers102 or oxford_iiit_pet), variant (fast / medium / long: the small-data sweeps'
settings), epochs (0: the variant's), temperature (0: the variant's), data_dir, dtype.
`demo` (first) is the README's demonstration on the built-in data: a student distilled from the
demo's trained teacher (configs/demo.py's workdir); with `teacher=` left empty the same student
trains on the labels, the baseline (docs/distillation.md).

The recipe is big_vision's (configs/proj/distill/bit_i1k.py and bigsweep_flowers_pet.py, after
Beyer et al., CVPR 2022): teacher and student see the same inception crop, flip and MixUp
(alpha 1, every batch); loss t^2 KL(softmax(teacher / t) || softmax(student / t)); Adam (first
moment in bfloat16), gradients clipped to global norm 1, weight decay decoupled on kernels and
following the schedule, linear warm-up then cosine decay to 0; the student starts from scratch.
As every recipe here, the rate is stated at the recipe's batch and follows --config.batch_size.
"""

from big_transfer import errors
from big_transfer.recipes import scaling
from big_transfer.recipes import schema as config_lib

# ImageNet: 98% of the train split (1,281,167 images) trains, the last 1% is big_vision's minival.
_IMAGENET = dict(train_split="train[:98%]", train_examples=1_255_544, eval_split="validation",
                 crop=224, batch=4096,
                 warmup=5000, shuffle=250_000, epochs=1200, temperature=1.0, lr=0.03, wd=3e-4)

# Small-data sweeps, per data set and variant: (epochs, temperature, lr, weight decay) at batch
# 512 with a 1500-step warm-up, 128 px (Fig. 3 / Tab. 4 of the paper, the big_vision config).
_SMALL = {
    "oxford_flowers102": dict(train_split="train", train_examples=1020, eval_split="test", variants={
        "fast": (10_000, 10.0, 0.003, 3e-4), "medium": (100_000, 1.0, 0.001, 1e-4),
        "long": (1_000_000, 1.0, 0.0003, 1e-5)}),
    "oxford_iiit_pet": dict(train_split="train[:90%]", train_examples=3312, eval_split="test",
                            variants={
                                "fast": (1000, 5.0, 0.01, 1e-3),
                                "medium": (3000, 10.0, 0.003, 3e-4),
                                "long": (30_000, 2.0, 0.003, 1e-5)}),
}
DATASETS = ("imagenet2012", *_SMALL)


def _set_distill_recipe(config, *, lr: float, wd: float, at_batch: int, warmup_steps: int,
                        epochs: int, train_examples: int, temperature: float) -> None:
  """big_vision's optimization for distillation, following --config.batch_size."""
  config.batch_size = at_batch
  config.optimizer = "adam"
  config.lr = scaling.scaled_by_batch(config, lr, at_batch)
  config.weight_decay = wd
  config.grad_clip_norm = 1.0
  config.lr_decay = "cosine"
  config.decay_fractions = ()
  config.total_steps = scaling.steps_for_examples(config, epochs * train_examples)
  config.warmup_steps = scaling.steps_for_examples(config, warmup_steps * at_batch)
  config.data.mixup_alpha = 1.0
  config.data.recipe = "upstream"  # Inception crop and flip; central crop to evaluate.
  config.distill.temperature = temperature


def _demo(config, teacher: str):
  """The built-in data's demonstration: the demo's teacher into the same small network."""
  config.model = "BiT-S-R14x1"
  config.dataset = "bit_synthetic/upstream"
  config.data.crop = 32
  config.data.shuffle_buffer = 2_000
  config.distill.teacher = teacher
  _set_distill_recipe(config, lr=0.003, wd=1e-4, at_batch=32, warmup_steps=15, epochs=1,
                      train_examples=150 * 32, temperature=1.0)
  config.log_every_steps = 25
  config.checkpoint_every_steps = 50
  config.eval_batch_size = 256
  return config


def get_config(arg: str = ""):
  parts = [part.strip() for part in arg.split(",") if part.strip()]
  demo = bool(parts) and parts[0] == "demo"
  args = config_lib.parse_arg(",".join(parts[1:] if demo else parts), teacher="",
                              student="BiT-S-R50x1", dataset="imagenet2012", variant="medium",
                              epochs=0, temperature=0.0, data_dir="", dtype="float32")
  config = config_lib.base()
  config.model_dtype = args["dtype"]
  config.data.data_dir = args["data_dir"] or None
  if demo:
    return _demo(config, args["teacher"])
  if not args["teacher"]:
    raise errors.ConfigError("configs/distill.py needs teacher=PATH (a .npz, a run's workdir or "
                             "a .msgpack export; several separated by ';').")
  if args["dataset"] not in DATASETS:
    raise errors.ConfigError(f"configs/distill.py knows dataset {DATASETS}, got "
                             f"{args['dataset']!r}; for another, start from the nearest and set "
                             "--config.dataset and the --config.data splits.")
  config.model = args["student"]
  config.dataset = args["dataset"]
  config.distill.teacher = args["teacher"]
  if args["dataset"] == "imagenet2012":
    facts = dict(_IMAGENET)
    epochs, temperature, lr, wd = facts["epochs"], facts["temperature"], facts["lr"], facts["wd"]
    batch, warmup, crop, shuffle = facts["batch"], facts["warmup"], facts["crop"], facts["shuffle"]
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoint_every = 20_000
    config.eval_every_steps = 1000
  else:
    facts = _SMALL[args["dataset"]]
    if args["variant"] not in facts["variants"]:
      raise errors.ConfigError(f"variant must be one of {sorted(facts['variants'])}, got "
                               f"{args['variant']!r}.")
    epochs, temperature, lr, wd = facts["variants"][args["variant"]]
    batch, warmup, crop, shuffle = 512, 1500, 128, 50_000
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    config.eval_every_steps = 2500
  config.data.train_split = facts["train_split"]
  config.data.eval_split = facts["eval_split"]
  config.data.crop = crop
  config.data.shuffle_buffer = shuffle
  _set_distill_recipe(config, lr=lr, wd=wd, at_batch=batch, warmup_steps=warmup,
                      epochs=args["epochs"] or epochs,
                      train_examples=facts["train_examples"],
                      temperature=args["temperature"] or temperature)
  return config
