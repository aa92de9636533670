"""Every recipe in configs/ loads, locks and resolves to the paper's numbers.

Expected values are computed here from the paper's statements (BIT_FACTS: images, epochs, batch,
rates, the HyperRule's table), not read from the code under test.
"""

import ast

import pytest

import cli
from big_transfer import errors
from big_transfer.data import dataset_table
from big_transfer.recipes import schema
from big_transfer.training import optim

ILSVRC2012_TRAIN = 1_281_167
IMAGENET21K_TRAIN = 14_197_122 - 51_200


def _load(recipe: str, *overrides: str):
  """The config as the command line builds it: the recipe file's `get_config(ARG)`, locked,
  then each `--config.KEY=VALUE` set on it (tests/test_main.py runs the command line itself)."""
  config = cli.recipe_config(f"configs/{recipe}")
  config.lock()
  for override in overrides:
    key, value = override.removeprefix("--config.").split("=", 1)
    setattr(config, key, ast.literal_eval(value))
  return config


def _epochs_to_steps(epochs, images, batch):
  return round(epochs * images / batch)


def _assert_upstream(config, images, batch, epochs, decay_epochs):
  schedule = optim.Schedule.from_config(config)
  assert config.batch_size == batch
  assert schedule.peak_lr == pytest.approx(0.03 * batch / 256)
  assert schedule.total_steps == _epochs_to_steps(epochs, images, batch)
  # 5000 warm-up steps at batch 4096: the same number of images at any batch.
  assert schedule.warmup_steps == round(5000 * 4096 / batch)
  expected_decays = [_epochs_to_steps(e, images, batch) for e in decay_epochs]
  assert list(schedule.decay_steps) == pytest.approx(expected_decays, abs=1)
  assert (config.momentum, config.weight_decay) == (0.9, 1e-4)
  assert (config.data.recipe, config.data.crop, config.data.mixup_alpha) == ("upstream", 224, 0.0)
  assert config.data.shuffle_buffer == 250_000
  assert set(config.fewshot.datasets) == {"cifar10", "cifar100", "oxford_iiit_pet",
                                          "oxford_flowers102"}
  assert tuple(config.fewshot.shots) == (1, 5, 10, 25) and config.fewshot.seeds == 3
  assert config.fewshot.l2_reg == 2.0**10


@pytest.mark.parametrize("batch", [4096, 1024])
def test_bit_s_is_90_epochs_of_ilsvrc_with_decays_at_30_60_80(batch):
  config = _load("bit_s.py", f"--config.batch_size={batch}")
  _assert_upstream(config, ILSVRC2012_TRAIN, batch, 90, (30, 60, 80))
  assert (config.dataset, config.data.train_split, config.data.eval_split) == (
      "imagenet2012", "train", "validation")
  assert (config.loss, config.head_bias_init, config.grad_clip_norm) == ("softmax_xent", 0.0, None)


@pytest.mark.parametrize("batch", [4096, 2048])
def test_bit_m_is_90_epochs_of_imagenet21k_with_a_sigmoid_loss_and_its_stabilizers(batch):
  config = _load("bit_m.py:model=BiT-M-R101x3", f"--config.batch_size={batch}")
  _assert_upstream(config, IMAGENET21K_TRAIN, batch, 90, (30, 60, 80))
  assert config.model == "BiT-M-R101x3" and config.num_classes == 21_843
  assert (config.loss, config.data.multilabel) == ("sigmoid_xent", True)
  assert (config.head_bias_init, config.grad_clip_norm) == (-10.0, 1.0)
  assert (config.data.train_split, config.data.eval_split) == ("full[51200:]", "full[:51200]")


def test_bit_l_is_40_epochs_with_decays_at_10_23_30_37():
  config = _load("bit_l.py:dataset=my_jft,train_examples=300000000", "--config.batch_size=8192")
  _assert_upstream(config, 300_000_000, 8192, 40, (10, 23, 30, 37))
  assert (config.dataset, config.loss, config.head_bias_init, config.grad_clip_norm) == (
      "my_jft", "sigmoid_xent", -10.0, 1.0)


# The HyperRule (BIT_FACTS): below 96x96 px resize 160 crop 128, else 448 -> 384; schedule by
# labelled examples (released table, at batch 512); MixUp 0.1 from 20k examples on.
def _hyperrule_expectation(examples, image_size):
  small = image_size[0] * image_size[1] < 96 * 96
  if examples < 20_000:
    warmup, decays, total = 100, (200, 300, 400), 500
  elif examples < 500_000:
    warmup, decays, total = 500, (3000, 6000, 9000), 10_000
  else:
    warmup, decays, total = 500, (6000, 12_000, 18_000), 20_000
  return {"resolution": (160, 128) if small else (448, 384), "warmup": warmup, "decays": decays,
          "total": total, "mixup": 0.1 if examples >= 20_000 else 0.0}


@pytest.mark.parametrize("name", sorted(dataset_table.KNOWN))
@pytest.mark.parametrize("shots", [0, 5])
def test_hyperrule_resolves_every_known_data_set(name, shots):
  facts = dataset_table.lookup(name)
  arg = f"dataset={name}" + (f",examples_per_class={shots}" if shots else "")
  config = _load(f"hyperrule.py:{arg}")
  examples = shots * facts.num_classes if shots else facts.train_examples
  expected = _hyperrule_expectation(examples, facts.image_size)
  schedule = optim.Schedule.from_config(config)
  assert (config.data.precrop, config.data.crop) == expected["resolution"]
  assert (schedule.warmup_steps, schedule.decay_steps, schedule.total_steps) == (
      expected["warmup"], expected["decays"], expected["total"])
  assert config.data.mixup_alpha == expected["mixup"]
  assert config.batch_size == 512 and schedule.peak_lr == pytest.approx(0.003)
  assert (config.momentum, config.weight_decay, config.data.recipe) == (0.9, 0.0, "finetune")
  assert (config.data.train_split, config.data.eval_split) == (facts.train_split,
                                                               facts.eval_split)
  assert config.data.examples_per_class == (shots or None)
  assert (config.loss, config.init_keep_head) == ("softmax_xent", False)


def test_hyperrule_fine_tunes_on_the_released_training_splits():
  assert _load("hyperrule.py:dataset=cifar10").data.train_split == "train[:98%]"
  assert _load("hyperrule.py:dataset=cifar100").data.train_split == "train[:98%]"
  assert _load("hyperrule.py:dataset=imagenet2012").data.train_split == "train[:99%]"


def test_hyperrule_batch_override_keeps_the_rate_per_example_and_the_examples_seen():
  config = _load("hyperrule.py:dataset=cifar10", "--config.batch_size=128")
  schedule = optim.Schedule.from_config(config)
  assert schedule.peak_lr == pytest.approx(0.003 * 128 / 512)
  assert (schedule.warmup_steps, schedule.total_steps) == (500 * 4, 10_000 * 4)
  assert schedule.decay_steps == (3000 * 4, 6000 * 4, 9000 * 4)


def test_an_explicit_override_of_a_scaled_key_wins():
  config = _load("bit_s.py", "--config.lr=0.1", "--config.total_steps=7",
                 "--config.batch_size=512")
  assert (config.lr, config.total_steps, config.warmup_steps) == (0.1, 7, 40_000)


def test_demo_and_its_smoke_variant_load():
  demo, smoke = _load("demo.py"), _load("demo.py:smoke")
  assert optim.Schedule.from_config(demo).total_steps == 300
  assert optim.Schedule.from_config(smoke).total_steps == 6
  assert set(demo.fewshot.datasets) == {"bit_synthetic/downstream"}


def test_a_locked_recipe_refuses_an_unknown_key():
  with pytest.raises(AttributeError, match="learning_rate"):
    _load("bit_s.py", "--config.learning_rate=0.1")


@pytest.mark.parametrize("recipe, message", [
    ("hyperrule.py:bogus=1", "Config argument 'bogus=1' is not one of key=value"),
    ("hyperrule.py:examples_per_class=five", "examples_per_class must be an integer, got 'five'"),
    ("demo.py:fast", "configs/demo.py takes no argument or 'smoke', got 'fast'"),
])
def test_a_bad_recipe_argument_is_a_config_error(recipe, message):
  with pytest.raises(errors.ConfigError, match=message):
    _load(recipe)


@pytest.mark.parametrize("override", ["--config.weight_decay=1e999",
                                      "--config.grad_clip_norm=-1e999"])
def test_a_non_finite_number_anywhere_in_the_config_is_refused_naming_its_key(override):
  key, value = override.removeprefix("--config.").split("=")
  with pytest.raises(errors.ConfigError,
                     match=rf"^{key} must be a finite number, got {float(value)} "
                           rf"\(--config.{key}\)\.$"):
    schema.check(_load("demo.py:smoke", override))


def test_a_nan_is_refused_like_an_infinity():
  config = _load("demo.py:smoke")
  config.fewshot.l2_reg = float("nan")
  with pytest.raises(errors.ConfigError, match=r"^fewshot.l2_reg must be a finite number, got nan"):
    schema.check(config)


def test_hyperrule_notes_its_decisions_and_the_values_the_run_uses_after_overrides():
  config = _load("hyperrule.py:dataset=oxford_iiit_pet,examples_per_class=5",
                 "--config.batch_size=128")
  config.data.crop = 96  # As --config.data.crop=96 sets it.
  notes = config.recipe_notes
  facts = dataset_table.lookup("oxford_iiit_pet")
  examples = 5 * facts.num_classes
  assert (notes.examples_per_class, notes.train_examples) == (5, examples)
  assert notes.examples_counted.startswith(f"5 per class x {facts.num_classes} classes")
  # The rule's own decisions, at its batch of 512 (BIT_FACTS: below 20k examples, 500 steps).
  assert notes.resolution_rule.endswith("resize to 448, random crop 384")
  assert notes.schedule_rule.startswith(f"{examples} examples, below 20000: 500 steps at batch "
                                        "512, warm-up 100")
  assert notes.mixup_rule == f"{examples} examples, below 20000: no MixUp"
  # What the run does after the overrides: the batch keeps the examples seen.
  assert (notes.batch_size, notes.total_steps, notes.warmup_steps) == (128, 2000, 400)
  assert notes.lr == pytest.approx(0.003 * 128 / 512)
  assert (notes.precrop, notes.crop) == (448, 96)
  assert notes.splits == "train on 'train', evaluate on 'test'"


def test_hyperrule_few_shot_draws_follow_the_seed_unless_set_apart():
  config = _load("hyperrule.py:examples_per_class=5", "--config.seed=2")
  assert (config.data.fewshot_seed, config.recipe_notes.fewshot_seed) == (2, 2)
  config = _load("hyperrule.py:examples_per_class=5", "--config.seed=2")
  config.data.fewshot_seed = 7  # As --config.data.fewshot_seed=7 sets it.
  assert (config.seed, config.data.fewshot_seed, config.recipe_notes.fewshot_seed) == (2, 7, 7)


def test_only_recipes_write_notes():
  assert not _load("bit_s.py").recipe_notes
  assert "fewshot_seed" not in _load("hyperrule.py:dataset=cifar10").recipe_notes
