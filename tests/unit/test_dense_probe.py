"""The dense example (benchmarks/dense_probe.py): masks, IoU, a backbone's weights, a falling loss."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import dense_probe
from big_transfer import models


def test_masked_images_are_scaled_images_and_binary_masks_of_one_object():
  images, masks = dense_probe.masked_images(4, 32, seed=0)
  assert images.shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32)
  assert images.min() >= -1 and images.max() <= 1
  assert set(np.unique(masks)) == {0.0, 1.0}
  assert all(0.02 < m.mean() < 0.5 for m in masks)


def test_iou_counts_the_pixels_of_both():
  masks = np.zeros((1, 4, 4), np.float32)
  masks[0, :2] = 1  # 8 pixels.
  logits = -np.ones((1, 4, 4), np.float32)
  logits[0, 1:3] = 1  # 8 pixels, 4 of them in the mask.
  assert dense_probe.iou(logits, masks) == 4 / 12


def test_a_pretrained_backbone_replaces_the_initial_one_and_the_head_stays_new():
  classifier = models.create("R14x1", num_classes=3)
  shapes = jax.eval_shape(classifier.init, jax.random.key(5), jnp.zeros((1, 16, 16, 3)))["params"]
  rng = np.random.default_rng(5)
  pretrained = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), shapes)
  model = dense_probe.Segmenter("R14x1")
  params = dense_probe.initial_params(model, 16, pretrained)
  fresh = dense_probe.initial_params(model, 16)
  np.testing.assert_array_equal(params["backbone"]["block3_unit01"]["conv2"]["kernel"],
                                pretrained["block3_unit01"]["conv2"]["kernel"])
  jax.tree.map(np.testing.assert_array_equal, params["head"], fresh["head"])


def test_the_dense_loss_falls():
  model = dense_probe.Segmenter("R14x1")
  images, masks = dense_probe.masked_images(32, 16, seed=0)
  params = dense_probe.initial_params(model, 16)
  logits = model.apply({"params": params}, images[:2])
  assert logits.shape == (2, 16, 16)
  _, losses = dense_probe.train(model, params, images, masks, steps=12, batch_size=8, lr=3e-3)
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
