"""The keys every recipe in configs/ has, with their defaults: the schema of a run.

Recipes start from `base()` and override; the command line may set only keys present here
(the config is locked), so a misspelt `--config.KEY` fails instead of being ignored.
"""

import ml_collections

from big_transfer import data, errors


def base() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = "BiT-S-R50x1"        # R<depth>x<width>, see big_transfer.models.create.
  config.model_dtype = "float32"      # or "bfloat16": bf16 compute, float32 params and logits.
  config.num_classes = 0              # 0: the data set's number of classes.
  config.init = ""                    # pretrained weights: a published .npz or a run's workdir.

  config.dataset = data.InputConfig.dataset   # TFDS name, or folder:/path.
  config.data = data.config_section()         # big_transfer.data.InputConfig's other fields.

  config.seed = 0
  config.batch_size = 4096            # global, over all devices and hosts.
  config.grad_accum_steps = 1
  config.total_steps = 1000
  config.lr = 0.03 * 4096 / 256       # peak learning rate (already scaled for the batch).
  config.warmup_steps = 0
  config.decay_steps = ()             # x0.1 after each of these steps.
  config.momentum = 0.9
  config.weight_decay = 0.0           # coupled L2 on kernels, see big_transfer.optim.
  config.grad_clip_norm = ml_collections.FieldReference(None, field_type=float)
  config.loss = "softmax_xent"        # or "sigmoid_xent" for multi-label data.

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: the remaining devices.

  config.log_every_steps = 50
  config.eval_every_steps = 0         # 0: evaluate at the end only.
  config.eval_batch_size = 256
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.keep_checkpoint_every = 0    # also keep every checkpoint at a multiple of this (0: no).
  config.fewshot = ml_collections.ConfigDict(dict(datasets=(), shots=(1, 5, 10)))

  # One job per workdir (big_transfer.workdir_hold): a hold whose heartbeat is older than this
  # belongs to a job that is gone and is taken over; a younger one stops a second job at once.
  config.hold_stale_after_s = 600.0
  return config


def parse_arg(arg: str, **defaults) -> dict:
  """Parses a recipe argument "key=value,key=value" against `defaults`.

  Values are converted to the type of the default (int, float, bool, str; a default of None
  takes a string). An unknown key is an error that lists the known ones.
  """
  values = dict(defaults)
  for item in filter(None, (part.strip() for part in arg.split(","))):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise errors.ConfigError(f"Config argument {item!r} is not one of key=value with key in "
                       f"{sorted(defaults)}.")
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise errors.ConfigError(f"Config argument {key} must be true or false, got {value!r}.")
      values[key] = value.lower() in ("true", "1")
    elif isinstance(default, (int, float)):
      try:
        values[key] = type(default)(value)
      except ValueError:
        raise errors.ConfigError(f"Config argument {key} must be a {type(default).__name__}, "
                         f"got {value!r}.") from None
    else:
      values[key] = value
  return values


def set_upstream_recipe(config: ml_collections.ConfigDict, train_examples: int, epochs: int,
                        decay_epochs: tuple[int, ...]) -> None:
  """The paper's upstream optimization for a data set of `train_examples` images.

  SGD momentum 0.9, lr 0.03 x batch/256 at global batch 4096, 5000 warm-up steps, x0.1 at each
  of `decay_epochs`, weight decay 1e-4, random inception crop to 224 and flip.
  """
  config.batch_size = 4096
  steps_per_epoch = train_examples / config.batch_size
  config.total_steps = round(epochs * steps_per_epoch)
  config.lr = 0.03 * config.batch_size / 256
  config.warmup_steps = 5000
  config.decay_steps = tuple(round(e * steps_per_epoch) for e in decay_epochs)
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.data.recipe = "upstream"
  config.data.crop = 224
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoint_every = 10_000
  config.fewshot.datasets = ("cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102")
