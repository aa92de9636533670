"""BiT-HyperRule at its boundaries, and the table of standard transfer sets."""

import pytest

from big_transfer.data import dataset_table
from big_transfer.recipes import hyperrule


@pytest.mark.parametrize("size, expected", [
    ((95, 96), (160, 128)), ((96, 96), (448, 384)), ((32, 32), (160, 128)), ((500, 375), (448, 384)),
])
def test_resolution_by_image_area(size, expected):
  assert hyperrule.resolution(size) == expected


def test_released_resolution_option():
  assert hyperrule.resolution((96, 96), released=True) == (512, 480)
  assert hyperrule.resolution((95, 96), released=True) == (160, 128)


@pytest.mark.parametrize("n, warmup, decays, total", [
    (1, 100, (200, 300, 400), 500),
    (19_999, 100, (200, 300, 400), 500),
    (20_000, 500, (3000, 6000, 9000), 10_000),
    (499_999, 500, (3000, 6000, 9000), 10_000),
    (500_000, 500, (6000, 12_000, 18_000), 20_000),
])
def test_schedule_table(n, warmup, decays, total):
  assert hyperrule.schedule(n) == hyperrule.StepCounts(warmup, decays, total)


@pytest.mark.parametrize("n, alpha", [(19_999, 0.0), (20_000, 0.1), (1_281_167, 0.1)])
def test_mixup_from_medium_tasks_on(n, alpha):
  assert hyperrule.mixup_alpha(n) == alpha


@pytest.mark.parametrize("n, fractions", [(1_000, (0.4, 0.6, 0.8)),
                                          (50_000, (0.3, 0.6, 0.9)),
                                          (1_000_000, (0.3, 0.6, 0.9))])
def test_decays_as_fractions_of_the_run(n, fractions):
  assert hyperrule.schedule(n).decay_fractions == pytest.approx(fractions)


@pytest.mark.parametrize("call, message", [
    (lambda: hyperrule.schedule(0), "dataset_size must be positive, got 0"),
    (lambda: hyperrule.resolution((0, 32)), "image height must be positive, got 0"),
])
def test_bad_arguments_are_explained(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_table_has_paper_sets_and_the_19_vtab_tasks():
  assert len(dataset_table.VTAB_1K) == 19
  for name in ("cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102", "imagenet2012"):
    assert name in dataset_table.KNOWN
  assert all(dataset_table.lookup(t).train_examples == 1000 for t in dataset_table.VTAB_1K)


def test_table_resolves_hyperrule_without_data():
  cifar = dataset_table.lookup("cifar10")
  assert hyperrule.resolution(cifar.image_size) == (160, 128)
  assert hyperrule.schedule(cifar.train_examples).total_steps == 10_000
  assert hyperrule.mixup_alpha(dataset_table.lookup("oxford_iiit_pet").train_examples) == 0.0


def test_unknown_table_name_suggests_close_ones():
  with pytest.raises(ValueError, match=r"'cifar-10' is not in the table.*Did you mean 'cifar10'"):
    dataset_table.lookup("cifar-10")
