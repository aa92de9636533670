"""The keys every recipe in configs/ has, with their defaults: the schema of a run.

Recipes start from `base()` and override; the command line may set only keys present here
(the config is locked), so a misspelt `--config.KEY` fails instead of being ignored. Recipes
express the learning rate and the step counts through `batch_size` (`scaling.scaled_by_batch`,
`steps_for_examples`), so `--config.batch_size=N` keeps the rate per example and the epochs.
"""

import math

import ml_collections

from big_transfer import atomic, data, errors
from big_transfer.recipes import upstream
from big_transfer.training import distill, evaluators, fewshot, optim


def base() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = "BiT-S-R50x1"        # R<depth>x<width>, see big_transfer.models.create.
  config.model_dtype = "float32"      # or "bfloat16": bf16 compute, float32 params and logits.
  config.num_classes = 0              # 0: the data set's number of classes.
  config.head_bias_init = 0.0         # initial head bias; -10 for sigmoid losses over many classes.
  config.init = ""                    # pretrained weights: a published .npz or a run's workdir.
  config.init_keep_head = False       # keep init's head (continue an upstream run), not a zero one.
  config.init_partial = False         # allow init from another architecture (matching arrays only).

  config.dataset = data.InputConfig.dataset   # TFDS name, or folder:/path.
  config.data = data.config_section()         # big_transfer.data.InputConfig's other fields.

  config.seed = 0
  config.batch_size = upstream.BATCH_SIZE  # global, over all devices and hosts.
  config.grad_accum_steps = 1
  config.total_steps = 1000
  config.lr = upstream.LR_PER_256 * upstream.BATCH_SIZE / 256  # peak rate at this batch_size.
  config.warmup_steps = 0
  config.decay_fractions = ()         # x0.1 after each of these fractions of total_steps.
  config.lr_decay = "steps"           # or "cosine" (then no decay_fractions).
  config.optimizer = "sgd_momentum"   # or "adam" (big_vision's distillation recipe).
  config.momentum = optim.MOMENTUM
  config.weight_decay = 0.0           # kernels; coupled L2 for SGD, decoupled for Adam (optim).
  config.grad_clip_norm = ml_collections.FieldReference(None, field_type=float)
  config.loss = "softmax_xent"        # or "sigmoid_xent" for multi-label data.
  # Distillation (big_transfer.training.distill): the student matches the teachers' softened
  # probabilities instead of the labels. teacher: ';'-separated published .npz files, run
  # workdirs or .msgpack exports; "" trains on the labels.
  config.distill = ml_collections.ConfigDict(dict(teacher="", temperature=1.0))

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: the remaining devices.

  config.log_every_steps = 50
  config.eval_every_steps = 0         # 0: evaluate at the end only.
  config.eval_batch_size = 256
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.keep_checkpoint_every = 0    # also keep every checkpoint at a multiple of this (0: no).
  # Few-shot linear probes on frozen features, as big_vision's evaluator: data set name ->
  # (train split the K examples per class are drawn from, test split).
  config.fewshot = ml_collections.ConfigDict(dict(
      datasets=ml_collections.ConfigDict(), shots=fewshot.DEFAULT_SHOTS,
      seeds=fewshot.DEFAULT_SEEDS, l2_reg=fewshot.DEFAULT_L2_REG))

  # Evaluators (big_transfer.training.evaluators; docs/evaluation.md), run with the eval split
  # at the end and every eval_every_steps: names such as "imagenet2012_real", "imagenet_a",
  # "objectnet:DIR". One whose data is not prepared is named in a warning at the start and
  # skipped. evals_label_map maps the head to ImageNet-1k first ("i21k_to_i1k" for BiT-M's).
  config.evals = ()
  config.evals_label_map = ""

  # What the recipe decided and why (configs/hyperrule.py: the resolution rule, the schedule,
  # MixUp, the examples counted), logged at the start of the run and kept in summary.json.
  # Filled by recipes only; values may be references to the keys they explain, so they show
  # the run's values after --config overrides.
  config.recipe_notes = ml_collections.ConfigDict()

  # Activation memory: "unit" or "stage" recomputes each residual unit's or stage's activations
  # in the backward pass instead of keeping them (more compute, less memory; the largest models).
  config.remat = "none"

  # One job per workdir (big_transfer.launch.workdir_hold): a hold whose heartbeat is older than this
  # belongs to a job that is gone and is taken over; a younger one stops a second job at once.
  config.hold_stale_after_s = 600.0

  # A multi-process job (big_transfer.launch.distributed): a process whose heartbeats stop for this
  # many seconds counts as lost, and the others stop with one line naming it.
  config.peer_timeout_s = 60
  return config


def check(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError for a value of `base()`'s keys that no run can use.

  Keys owned by another module are checked there (the schedule by `optim.Schedule`, the mesh by
  `sharding`, the data section by `data.InputConfig`, the model by `models`); that every number
  is finite is checked here, for all of them, and that the scheme of `init` and of each teacher
  has a file system.
  """
  for key, value in _numbers(config.to_dict()):
    if not math.isfinite(value):
      raise errors.ConfigError(f"{key} must be a finite number, got {value} (--config.{key}).")
  positive = ("batch_size", "grad_accum_steps", "log_every_steps", "eval_batch_size",
              "checkpoint_every_steps", "keep_checkpoints")
  for key in positive:
    if config[key] < 1:
      raise errors.ConfigError(f"{key} must be >= 1, got {config[key]} (--config.{key}).")
  for key in ("eval_every_steps", "keep_checkpoint_every", "num_classes"):
    if config[key] < 0:
      raise errors.ConfigError(f"{key} must be >= 0 (0 turns it off or means the default), got "
                               f"{config[key]} (--config.{key}).")
  _check_numbers("decay_fractions", config.decay_fractions, float)
  _check_numbers("fewshot.shots", config.fewshot.shots, int)
  if any(k < 1 for k in config.fewshot.shots) or config.fewshot.seeds < 1:
    raise errors.ConfigError("fewshot.shots must be >= 1 and fewshot.seeds >= 1, got shots "
                             f"{tuple(config.fewshot.shots)} and seeds {config.fewshot.seeds}.")
  evaluators.check(config.evals, config.evals_label_map)
  if config.fewshot.l2_reg <= 0:
    raise errors.ConfigError(f"fewshot.l2_reg must be positive, got {config.fewshot.l2_reg}.")
  atomic.check_scheme(config.init, "--config.init")
  for teacher in distill.teacher_paths(config.distill.teacher):
    atomic.check_scheme(teacher, "--config.distill.teacher", config.distill.teacher)


def _numbers(tree: dict, prefix: str = ""):
  """(dotted key, value) of every float in a config's dict, tuples' items included."""
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      yield from _numbers(value, f"{name}.")
    elif isinstance(value, float):
      yield name, value
    elif isinstance(value, (tuple, list)):
      yield from ((name, v) for v in value if isinstance(v, float))


def _check_numbers(key: str, values, kind: type) -> None:
  """A tuple key must hold numbers: `--config.KEY=abc` would otherwise iterate the string."""
  allowed = (int, float) if kind is float else (int,)
  if not isinstance(values, (tuple, list)) or not all(
      isinstance(v, allowed) and not isinstance(v, bool) for v in values):
    raise errors.ConfigError(f"{key} must be a tuple of {kind.__name__}s such as "
                             f"--config.{key}='(1, 5)', got {values!r}.")


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
        kind = "an integer" if isinstance(default, int) else "a number"
        raise errors.ConfigError(f"Config argument {key} must be {kind}, got {value!r}.") from None
    else:
      values[key] = value
  return values
