"""Fine-tuning with BiT-HyperRule: every hyper-parameter from the task's size and image size.

    python -m big_transfer.main \
        --config=configs/hyperrule.py:model=BiT-M-R50x1,dataset=cifar10,init=BiT-M-R50x1.npz \
        --workdir=/tmp/cifar10

Arguments: model, dataset (a name of big_transfer.data.dataset_table, e.g. vtab/clevr_count,
any TFDS name, or folder:/path), init (a published .npz or a run's workdir), examples_per_class
(few-shot K, 0 for all), released_resolution (512 -> 480 instead of 448 -> 384), data_dir, dtype.
SGD momentum 0.9, lr 0.003 per 512 examples, no weight decay, zero-initialized head, schedule
and MixUp by the number of labelled examples, resize + random crop + flip by the image size.
`--config.batch_size=N` keeps the rate per example and the examples seen (steps x 512 / N).
A few-shot run draws its K examples per class with its seed (`--config.seed`). Every decision,
with the facts behind it, is in `config.recipe_notes`: the run's log and summary.json show it.
"""

from big_transfer import data
from big_transfer.data import dataset_table
from big_transfer.recipes import hyperrule, scaling
from big_transfer.recipes import schema as config_lib


def _facts(dataset: str, data_dir: str | None) -> tuple[str, str, str, int, tuple[int, int],
                                                       int, str]:
  """(tfds name, train split, eval split, train examples, image size, classes, where these
  facts come from) for `dataset`."""
  facts = dataset_table.find(dataset)
  if facts:
    return (facts.tfds_name, facts.train_split, facts.eval_split, facts.train_examples,
            facts.image_size, facts.num_classes, "big_transfer/data/dataset_table.py")
  # Not in the table: a folder or another TFDS data set, measured or read from metadata.
  info = data.dataset_info(data.InputConfig(dataset=dataset, data_dir=data_dir))
  return (dataset, "train", "test", info.num_train_examples, info.image_size, info.num_classes,
          "the data")


def get_config(arg: str = ""):
  args = config_lib.parse_arg(arg, model="BiT-M-R50x1", dataset="cifar10", init="",
                              examples_per_class=0, released_resolution=False, data_dir="",
                              dtype="float32")
  config = config_lib.base()
  config.model = args["model"]
  config.model_dtype = args["dtype"]
  config.init = args["init"]
  data_dir = args["data_dir"] or None
  name, train_split, eval_split, train_examples, image_size, num_classes, source = _facts(
      args["dataset"], data_dir)
  config.dataset = name
  config.data.data_dir = data_dir
  config.data.train_split = train_split
  config.data.eval_split = eval_split
  counted = f"{train_examples} in the train split {train_split!r} ({source})"
  shots = args["examples_per_class"]
  if shots:
    config.data.examples_per_class = shots
    # Each seed of a few-shot run draws its own K examples per class (`--config.seed`);
    # `--config.data.fewshot_seed` alone changes the draw and keeps the training seed.
    config.data.fewshot_seed = config.get_ref("seed") + 0
    train_examples = shots * num_classes
    counted = f"{shots} per class x {num_classes} classes ({source})"

  config.data.precrop, config.data.crop = hyperrule.resolution(
      image_size, released=args["released_resolution"])
  config.data.recipe = "finetune"
  config.data.mixup_alpha = hyperrule.mixup_alpha(train_examples)
  # The HyperRule's steps are for a batch of 512; another batch keeps the examples seen.
  schedule = hyperrule.schedule(train_examples)
  batch = hyperrule.BASE_BATCH_SIZE
  config.batch_size = batch
  config.lr = scaling.scaled_by_batch(config, hyperrule.BASE_LR, batch)
  config.total_steps = scaling.steps_for_examples(config, schedule.total_steps * batch)
  config.warmup_steps = scaling.steps_for_examples(config, schedule.warmup_steps * batch)
  config.decay_fractions = schedule.decay_fractions
  config.momentum = hyperrule.MOMENTUM
  config.weight_decay = 0.0
  config.log_every_steps = 50
  total = config.get_ref("total_steps")
  config.eval_every_steps = (total + 4) // 5      # Five evaluations per run.
  config.checkpoint_every_steps = (total + 9) // 10
  _note_decisions(config, train_examples, counted, image_size, args["released_resolution"])
  return config


def _note_decisions(config, train_examples: int, counted: str, image_size: tuple[int, int],
                    released: bool) -> None:
  """Fills `config.recipe_notes`: each rule's sentence, and references to the values it set, so
  the notes show the run's values after `--config` overrides (a batch, a resolution)."""
  notes = config.recipe_notes
  notes.recipe = "BiT-HyperRule (configs/hyperrule.py)"
  notes.examples_per_class = config.data.examples_per_class or 0
  notes.train_examples = train_examples
  notes.examples_counted = counted
  notes.splits = f"train on {config.data.train_split!r}, evaluate on {config.data.eval_split!r}"
  for key, sentence in hyperrule.explain(image_size, train_examples, released).items():
    notes[f"{key}_rule"] = sentence
  notes.lr_rule = (f"{hyperrule.BASE_LR} per {hyperrule.BASE_BATCH_SIZE} examples, scaled by "
                   f"batch_size / {hyperrule.BASE_BATCH_SIZE}; schedule steps scaled by "
                   f"{hyperrule.BASE_BATCH_SIZE} / batch_size")
  notes.precrop = config.data.get_ref("precrop")
  notes.crop = config.data.get_ref("crop")
  notes.mixup_alpha = config.data.get_ref("mixup_alpha")
  for key in ("batch_size", "lr", "total_steps", "warmup_steps"):
    notes[key] = config.get_ref(key)
  if config.data.examples_per_class:
    notes.fewshot_seed = config.data.get_ref("fewshot_seed")
