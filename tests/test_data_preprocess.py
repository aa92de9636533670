"""The BiT recipes on single encoded images: windows, decoding inside the JPEG decoder, scaling."""

import numpy as np
import pytest
import tensorflow as tf

from big_transfer.data import preprocess


@pytest.fixture(scope="module")
def pixels():
  yy, xx = np.mgrid[:375, :500]
  return (127 + 100 * np.sin(np.stack([yy / 20, xx / 30, (yy + xx) / 25], -1))).astype(np.uint8)


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


def test_inception_windows_keep_area_and_aspect_ratio_in_range():
  shape = tf.constant([375, 500, 3])
  for i in range(50):
    y, x, h, w = preprocess.inception_window(shape, preprocess.key(0, i)).numpy()
    assert 0 <= y and y + h <= 375 and 0 <= x and x + w <= 500
    assert 0.08 - 0.01 <= h * w / (375 * 500) <= 1.0
    assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02 or (h, w) == (375, 500)  # Fallback: all of it.


def test_finetune_window_is_crop_over_precrop_of_each_side():
  shape = tf.constant([375, 500, 3])
  for i in range(20):
    y, x, h, w = preprocess.finetune_window(shape, 448, 384, preprocess.key(0, i)).numpy()
    assert (h, w) == (round(375 * 384 / 448), round(500 * 384 / 448))
    assert 0 <= y and y + h <= 375 and 0 <= x and x + w <= 500


def test_images_are_scaled_to_unit_range(pixels):
  image = preprocess.eval_image(tf.io.encode_png(pixels), 64).numpy()
  assert image.shape == (64, 64, 3)
  np.testing.assert_allclose(preprocess.to_unit_range(tf.constant([0.0, 127.5, 255.0])),
                             [-1.0, 0.0, 1.0])
  assert -1.0 <= image.min() and image.max() <= 1.0
