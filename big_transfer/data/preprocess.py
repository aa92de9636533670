"""BiT image recipes on encoded images, and MixUp on batches (TensorFlow, inside tf.data).

Every random choice comes from a stateless op with an explicit key, so a pipeline's output is a
function of its keys alone. JPEGs are cropped inside the decoder (`decode_and_crop_jpeg`): the
pixels outside the crop are never produced. Other formats (PNG, ...) are decoded, then cropped.
Images come out float32 in [-1, 1].
"""

import numpy as np
import tensorflow as tf

# Inception crop: area fraction and aspect ratio (width / height) of the random window.
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)


def key(seed: int, *data) -> tf.Tensor:
  """A stateless RNG key (int32 (2,)) that depends on `seed` and the integers `data` only."""
  derived = tf.constant([seed, 0], tf.int64)
  for value in data:
    derived = tf.random.experimental.stateless_fold_in(derived, tf.cast(value, tf.int64))
  return derived


def image_shape(encoded: tf.Tensor) -> tf.Tensor:
  """int32 (3,) (height, width, channels) of an encoded image; reads only a JPEG's header."""
  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: tf.image.extract_jpeg_shape(encoded),
                 lambda: tf.shape(decode(encoded)))


def decode(encoded: tf.Tensor) -> tf.Tensor:
  """uint8 (H, W, 3) of a JPEG, PNG, GIF or BMP image."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_window(encoded: tf.Tensor, window_fn) -> tf.Tensor:
  """Decodes the window `window_fn(shape)` = int32 (y, x, h, w) of an image: uint8 (h, w, 3)."""
  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(encoded))
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

  def other():
    image = decode(encoded)
    y, x, h, w = tf.unstack(window_fn(tf.shape(image)))
    return image[y:y + h, x:x + w]

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def inception_window(shape: tf.Tensor, rng: tf.Tensor) -> tf.Tensor:
  """Random window of 8%-100% of the area, aspect 3/4-4/3: int32 (y, x, h, w)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=rng,
      min_object_covered=0.0, aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.concat([begin[:2], size[:2]], axis=0)


def finetune_window(shape: tf.Tensor, precrop: int, crop: int, rng: tf.Tensor) -> tf.Tensor:
  """The window of the source image that a random crop x crop cut of its precrop-square resize
  shows: int32 (y, x, h, w). Cropping first and resizing after gives the same view for less work.
  """
  offset = tf.random.stateless_uniform([2], rng, minval=0, maxval=precrop - crop + 1,
                                       dtype=tf.int32)
  height_width = shape[:2]
  scale = tf.cast(height_width, tf.float32) / precrop
  begin = tf.cast(tf.round(tf.cast(offset, tf.float32) * scale), tf.int32)
  size = tf.maximum(tf.cast(tf.round(crop * scale), tf.int32), 1)
  return tf.concat([begin, tf.minimum(size, height_width - begin)], axis=0)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  return tf.image.resize(image, (size, size), method="bilinear")


def to_unit_range(image: tf.Tensor) -> tf.Tensor:
  """Pixel values [0, 255] -> [-1, 1]."""
  return image / 127.5 - 1.0


def train_image(encoded: tf.Tensor, recipe: str, precrop: int, crop: int,
                rng: tf.Tensor) -> tf.Tensor:
  """One augmented training image: float32 (crop, crop, 3) in [-1, 1].

  "upstream": inception crop, resized to crop x crop; "finetune": the view of a random crop x crop
  cut of the image resized to precrop x precrop. Both then flip at random.
  """
  window_rng, flip_rng = tf.unstack(tf.random.experimental.stateless_split(rng, 2))
  if recipe == "upstream":
    window_fn = lambda shape: inception_window(shape, window_rng)
  else:
    window_fn = lambda shape: finetune_window(shape, precrop, crop, window_rng)
  # Bilinear resizing is mirror-symmetric, so flipping the uint8 crop before resizing gives the
  # same image (to float rounding) as flipping after, and moves fewer bytes.
  image = tf.image.stateless_random_flip_left_right(decode_window(encoded, window_fn), flip_rng)
  return to_unit_range(_resize(image, crop))


def eval_image(encoded: tf.Tensor, crop: int) -> tf.Tensor:
  """The whole image resized to crop x crop: float32 (crop, crop, 3) in [-1, 1]."""
  return to_unit_range(_resize(decode(encoded), crop))


def mixup(batch: dict, alpha: float, rng: tf.Tensor) -> dict:
  """Mixes each example with its neighbour in the batch, one lambda ~ Beta(alpha, alpha) for all.

  Args:
    batch: {"image": float32 (B, H, W, 3), "label": float32 (B, num_classes)}.
    alpha: Beta parameter, > 0.
    rng: stateless key.

  Returns:
    The batch with image_i = lam * image_i + (1 - lam) * image_{i-1} (cyclic), labels alike.
  """
  first, second = tf.unstack(tf.random.experimental.stateless_split(rng, 2))
  # Two Gamma draws make a Beta draw; float64 keeps small alphas from underflowing to 0 / 0.
  gamma_a = tf.random.stateless_gamma([], first, alpha=alpha, dtype=tf.float64)
  gamma_b = tf.random.stateless_gamma([], second, alpha=alpha, dtype=tf.float64)
  lam = tf.cast(tf.math.divide_no_nan(gamma_a, gamma_a + gamma_b), tf.float32)
  mix = lambda x: lam * x + (1.0 - lam) * tf.roll(x, shift=1, axis=0)
  return {**batch, "image": mix(batch["image"]), "label": mix(batch["label"])}


def typical_size(sizes: np.ndarray) -> tuple[int, int]:
  """Median (height, width) of int (n, 2) image sizes."""
  height, width = np.median(sizes, axis=0)
  return int(round(height)), int(round(width))
