"""The BiT recipes on single encoded images: views, decoding inside the JPEG decoder, scaling."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from big_transfer.data import preprocess

ENCODERS = {"jpeg": tf.io.encode_jpeg, "png": tf.io.encode_png}


@pytest.fixture(scope="module")
def pixels():
  yy, xx = np.mgrid[:375, :500]
  return (127 + 100 * np.sin(np.stack([yy / 20, xx / 30, (yy + xx) / 25], -1))).astype(np.uint8)


def _random_image(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_jpeg_window_decoded_in_the_decoder_equals_that_crop_of_the_whole_image(pixels):
  encoded = tf.io.encode_jpeg(pixels)  # 4:2:0 chroma: crop borders may differ by a few levels.
  window = tf.constant([33, 57, 101, 203])
  cropped = preprocess.decode_window(encoded, lambda shape: window).numpy()
  whole = preprocess.decode(encoded).numpy()
  np.testing.assert_allclose(cropped, whole[33:134, 57:260], atol=8)


def test_png_window_is_the_exact_crop(pixels):
  encoded = tf.io.encode_png(pixels)
  cropped = preprocess.decode_window(encoded, lambda shape: tf.constant([10, 20, 30, 40]))
  np.testing.assert_array_equal(cropped.numpy(), pixels[10:40, 20:60])


def test_inception_windows_cover_5_to_100_percent_of_the_area_with_aspect_in_range():
  shape = tf.constant([375, 500, 3])
  areas = []
  for i in range(300):
    y, x, h, w = preprocess.inception_window(shape, preprocess.key(0, i)).numpy()
    assert 0 <= y and y + h <= 375 and 0 <= x and x + w <= 500
    assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02 or (h, w) == (375, 500)  # Fallback: all of it.
    areas.append(h * w / (375 * 500))
  assert 0.05 - 0.005 <= min(areas) < 0.08  # big_vision's 5%, not the 8% of Inception.
  assert max(areas) > 0.9


def _corners(view: np.ndarray) -> np.ndarray:
  """float32 (12,): the four corner pixels of an image (H, W, 3), a fingerprint of a view."""
  return np.concatenate([view[0, 0], view[0, -1], view[-1, 0], view[-1, -1]])


def _released_views(encoded, precrop, crop):
  """The views of the released recipe, each crop x crop cut of the image resized to precrop x
  precrop, flipped or not: a function from a view to its (top, left, flipped)."""
  resized = tf.image.resize(preprocess.decode(encoded), (precrop, precrop)).numpy() / 127.5 - 1
  last = precrop - crop
  top, left = (grid.ravel() for grid in np.mgrid[:last + 1, :last + 1])
  corner = lambda dy, dx: resized[top + dy, left + dx]  # (offsets, 3)
  c = crop - 1
  plain = np.concatenate([corner(0, 0), corner(0, c), corner(c, 0), corner(c, c)], axis=1)
  mirrored = np.concatenate([corner(0, c), corner(0, 0), corner(c, c), corner(c, 0)], axis=1)
  fingerprints = np.concatenate([plain, mirrored])

  def find(view):
    view = np.asarray(view)
    match = int(np.abs(fingerprints - _corners(view)).max(axis=1).argmin())
    at, flipped = match % len(top), match >= len(top)
    cut = resized[top[at]:top[at] + crop, left[at]:left[at] + crop]
    difference = np.abs(view - (cut[:, ::-1] if flipped else cut)).max()
    assert difference < 1e-5, f"not a view of the released recipe: off by {difference}"
    return int(top[at]), int(left[at]), flipped

  return find


@pytest.mark.parametrize("fmt, size, precrop, crop", [
    ("png", "small", 160, 128), ("jpeg", "small", 160, 128),  # CIFAR by the HyperRule.
    ("png", "wide", 448, 384), ("jpeg", "wide", 448, 384), ("jpeg", "tall", 512, 480)])
def test_finetune_view_is_a_cut_of_the_image_resized_to_precrop(pixels, fmt, size, precrop,
                                                                crop):
  image = {"small": _random_image(32, 32), "wide": pixels, "tall": pixels.transpose(1, 0, 2)}
  encoded = ENCODERS[fmt](image[size])
  find = _released_views(encoded, precrop, crop)
  for i in range(4):
    find(preprocess.train_image(encoded, "finetune", precrop, crop, preprocess.key(0, i)))


def test_finetune_views_of_a_small_image_take_each_of_the_33x33_offsets():
  """A 32x32 image resized to 160 and cut to 128 has 33 x 33 views, all equally likely."""
  encoded = tf.io.encode_png(_random_image(32, 32, seed=1))
  find = _released_views(encoded, 160, 128)
  draws = 3000
  views = tf.data.Dataset.range(draws).map(
      lambda i: preprocess.train_image(encoded, "finetune", 160, 128, preprocess.key(0, i)),
      num_parallel_calls=tf.data.AUTOTUNE)
  seen = [find(view) for view in views.as_numpy_iterator()]
  offsets = collections.Counter((top, left) for top, left, _ in seen)
  # 3000 uniform draws of 1089 offsets find 1089 * (1 - (1 - 1/1089)^3000) = 1020 of them on
  # average (sd ~ 8); cutting the source window that a view shows, as before, found 49.
  assert len(offsets) >= 980
  tops = np.bincount([top for top, _, _ in seen], minlength=33)
  assert len(tops) == 33 and tops.min() > 0.5 * draws / 33 and tops.max() < 1.5 * draws / 33
  assert 0.45 < np.mean([flipped for _, _, flipped in seen]) < 0.55


def _framed(height, width, horizontal):
  """A green image whose outer quarters (left and right, or top and bottom) are red."""
  image = np.zeros((height, width, 3), np.uint8)
  image[..., 1] = 255
  if horizontal:
    image[:, :width // 4] = image[:, -width // 4:] = (255, 0, 0)
  else:
    image[:height // 4] = image[-height // 4:] = (255, 0, 0)
  return tf.io.encode_png(image)


@pytest.mark.parametrize("height, width, horizontal", [(64, 128, True), (128, 64, False)],
                         ids=["wide", "tall"])
def test_upstream_eval_shows_only_the_centre_of_a_non_square_image(height, width, horizontal):
  view = preprocess.eval_image(_framed(height, width, horizontal), "upstream", 32).numpy()
  assert view.shape == (32, 32, 3)
  green = np.broadcast_to([-1.0, 1.0, -1.0], view.shape)
  np.testing.assert_allclose(view, green, atol=1e-6)  # Not a trace of red.


@pytest.mark.parametrize("height, width, horizontal", [(64, 128, True), (128, 64, False)],
                         ids=["wide", "tall"])
def test_finetune_eval_shows_the_whole_image(height, width, horizontal):
  view = preprocess.eval_image(_framed(height, width, horizontal), "finetune", 32).numpy()
  edges = (view[:, [0, -1]] if horizontal else view[[0, -1]]).reshape(-1, 3)
  np.testing.assert_allclose(edges, np.broadcast_to([1.0, -1.0, -1.0], edges.shape), atol=1e-6)
  np.testing.assert_allclose(view[16, 16], [-1.0, 1.0, -1.0], atol=1e-6)


def test_upstream_eval_resizes_the_shorter_side_to_crop_times_256_over_224():
  """A 7x224 ramp: the view is columns 16..240 of the image resized to 256 x 8192 / 7 (wide)."""
  ramp = np.tile(np.arange(224, dtype=np.uint8)[:, None, None], (1, 7, 3))  # Rows 0..223.
  view = preprocess.eval_view(tf.constant(ramp.transpose(1, 0, 2)), "upstream", 224).numpy()
  expected = tf.image.resize(ramp.transpose(1, 0, 2).astype(np.float32),
                             (256, round(224 * 256 / 7))).numpy()
  left = (round(224 * 256 / 7) - 224) // 2
  np.testing.assert_allclose(view, expected[16:240, left:left + 224] / 127.5 - 1, atol=1e-5)


def test_eval_view_of_a_batch_is_the_view_of_each_image():
  images = np.stack([_random_image(40, 60, seed) for seed in range(3)])
  for recipe in ("upstream", "finetune"):
    batch = preprocess.eval_view(tf.constant(images), recipe, 24).numpy()
    assert batch.shape == (3, 24, 24, 3)
    for image, view in zip(images, batch, strict=True):
      np.testing.assert_array_equal(view, preprocess.eval_view(tf.constant(image), recipe, 24))


def test_images_are_scaled_to_unit_range(pixels):
  image = preprocess.eval_image(tf.io.encode_png(pixels), "finetune", 64).numpy()
  assert image.shape == (64, 64, 3)
  np.testing.assert_allclose(preprocess.to_unit_range(tf.constant([0.0, 127.5, 255.0])),
                             [-1.0, 0.0, 1.0])
  assert -1.0 <= image.min() and image.max() <= 1.0
