"""Multi-label training end to end: multi-hot targets of a real feature spec (VOC 2007's
`labels` sequence, served by `tfds.testing.mock_data`) through the run's jitted steps, the
sigmoid loss with its -10 head bias, and top-1 on multi-hot targets."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_metadata
from big_transfer import data
from big_transfer.recipes import schema as config_lib
from big_transfer.training import evaluation, experiment

EXAMPLES = 16


@pytest.fixture
def voc(tmp_path):
  tfds_metadata.write_metadata(tmp_path, "voc/2007", {"train": EXAMPLES, "test": EXAMPLES})
  with tfds.testing.mock_data(num_examples=EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    yield str(tmp_path)


def test_sigmoid_training_on_multi_hot_targets_learns_and_evaluates(voc):
  config = config_lib.base()
  config.update(dict(model="BiT-S-R14x1", dataset="voc/2007", loss="sigmoid_xent",
                     head_bias_init=-10.0, grad_clip_norm=1.0, batch_size=8, total_steps=4,
                     lr=0.1, warmup_steps=0))
  config.data.update(dict(data_dir=voc, multilabel=True, crop=16, recipe="upstream"))
  exp = experiment.build(config)
  assert exp.model.num_classes == 20  # VOC's classes, from the data.
  state = exp.steps.create(jax.random.key(0))
  batches = data.prefetch_to_mesh(data.train_batches(exp.input_cfg, 8, seed=0),
                                  exp.batch_sharding)
  batch = next(batches)
  batches.close()
  labels = np.asarray(batch["label"])
  assert labels.shape == (8, 20) and labels.sum(axis=1).max() > 1  # Several labels each.
  losses = []
  for _ in range(config.total_steps):  # The same batch: the loss must fall.
    state, metrics = exp.steps.train(state, batch)
    losses.append(float(metrics["loss"]))
  # The head starts at zero weights and -10 biases: every logit is -10, so each true label costs
  # softplus(10) and each other class softplus(-10), summed over the 20 classes.
  positives = labels.sum(axis=1)
  expected = np.mean(positives * np.logaddexp(0, 10) + (20 - positives) * np.logaddexp(0, -10))
  assert losses[0] == pytest.approx(expected, rel=1e-4)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert int(state.first_bad_step) == -1
  results = evaluation.top1(state.params, exp.steps, exp.input_cfg, 8, exp.batch_sharding)
  assert results["examples"] == EXAMPLES
  assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["loss"])
