"""BiT image recipes on encoded images, and MixUp on batches (TensorFlow, inside tf.data).

Every random choice comes from a stateless op with an explicit key, so a pipeline's output is a
function of its keys alone. An inception crop decodes only its window: JPEGs are cut inside the
decoder (`decode_and_crop_jpeg`), other formats (PNG, ...) are decoded, then cut. The evaluation
view (`eval_view`) works on decoded images, so that an exported model runs the same ops. Images
come out float32 in [-1, 1].
"""

import numpy as np
import tensorflow as tf

# Inception crop of the upstream recipe: area fraction and aspect ratio (width / height) of the
# random window, as big_vision's BiT configs (decode_jpeg_and_inception_crop).
AREA_RANGE = (0.05, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# Upstream evaluation resizes the shorter side to crop * 256 / 224, then cuts the central square
# (big_vision's BiT configs: resize_small(256)|central_crop(224)).
SHORTER_SIDE_PER_CROP = 256 / 224


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
  """Random window of 5%-100% of the area, aspect 3/4-4/3: int32 (y, x, h, w)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=rng,
      min_object_covered=0.0, aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.concat([begin[:2], size[:2]], axis=0)


def _resize(image: tf.Tensor, size) -> tf.Tensor:
  return tf.image.resize(image, size, method="bilinear")


def to_unit_range(image: tf.Tensor) -> tf.Tensor:
  """Pixel values [0, 255] -> [-1, 1]."""
  return image / 127.5 - 1.0


def train_image(encoded: tf.Tensor, recipe: str, precrop: int, crop: int,
                rng: tf.Tensor) -> tf.Tensor:
  """One augmented training image: float32 (crop, crop, 3) in [-1, 1].

  "upstream": an inception crop (decoded alone), resized to crop x crop. "finetune" (the released
  BiT-HyperRule code): the image resized to precrop x precrop, then a crop x crop cut at an
  offset drawn uniformly from 0..precrop - crop on each axis. Both flip at random.
  """
  view_rng, flip_rng = tf.unstack(tf.random.experimental.stateless_split(rng, 2))
  if recipe == "upstream":
    window = decode_window(encoded, lambda shape: inception_window(shape, view_rng))
    # Bilinear resizing is mirror-symmetric, so flipping the uint8 window before resizing gives
    # the same image (to float rounding) as flipping after, and moves fewer bytes.
    flipped = tf.image.stateless_random_flip_left_right(window, flip_rng)
    return to_unit_range(_resize(flipped, (crop, crop)))
  # Cutting only the source window that the crop shows, and resizing it, would round that window
  # to whole source pixels: for small images (32 -> 160 -> 128), 7 x 7 views instead of 33 x 33.
  resized = _resize(decode(encoded), (precrop, precrop))
  cut = tf.image.stateless_random_crop(resized, [crop, crop, 3], view_rng)
  return to_unit_range(tf.image.stateless_random_flip_left_right(cut, flip_rng))


def shorter_side(crop: int) -> int:
  """Length the upstream evaluation view resizes the shorter side of an image to."""
  return round(crop * SHORTER_SIDE_PER_CROP)


def eval_view(images: tf.Tensor, recipe: str, crop: int) -> tf.Tensor:
  """The evaluation view of decoded images: float32 (..., crop, crop, 3) in [-1, 1].

  Args:
    images: uint8 (H, W, 3) or (B, H, W, 3).
    recipe: "finetune": the whole image resized to crop x crop (the released BiT-HyperRule
      code); "upstream": the shorter side resized to `shorter_side(crop)`, keeping the aspect
      ratio, then the central crop x crop square (big_vision's BiT configs).
    crop: side of the square view.
  """
  # Resizing float32 rather than uint8 gives the same values and keeps it a TF Lite builtin.
  images = tf.cast(images, tf.float32)
  if recipe == "finetune":
    return to_unit_range(_resize(images, (crop, crop)))
  height_width = tf.shape(images)[-3:-1]
  scale = shorter_side(crop) / tf.cast(tf.reduce_min(height_width), tf.float32)
  size = tf.cast(tf.round(tf.cast(height_width, tf.float32) * scale), tf.int32)
  top, left = tf.unstack((size - crop) // 2)
  view = _resize(images, size)[..., top:top + crop, left:left + crop, :]
  view.set_shape(images.shape[:-3].concatenate([crop, crop, 3]))
  return to_unit_range(view)


def eval_image(encoded: tf.Tensor, recipe: str, crop: int, border: int = 0) -> tf.Tensor:
  """The evaluation view (`eval_view`) of an encoded image: float32 (crop, crop, 3) in [-1, 1].

  `border` pixels are cut from each side of the decoded image first (ObjectNet's protocol: its
  images have a 1-2 pixel frame).
  """
  image = decode(encoded)
  if border:
    image = image[border:-border, border:-border]
  return eval_view(image, recipe, crop)


def eval_description(recipe: str, crop: int) -> dict:
  """`eval_view` in words and numbers (JSON-ready): what turns a uint8 RGB image into input."""
  resize = {"method": "bilinear", "antialias": False}
  if recipe == "finetune":
    steps = (f"bilinear resize of the whole image to {crop}x{crop} (tf.image.resize, no "
             "antialiasing, no crop, aspect ratio not kept)")
    resize.update(height=crop, width=crop)
    central_crop = None
  else:
    steps = (f"bilinear resize of the shorter side to {shorter_side(crop)}, keeping the aspect "
             "ratio (tf.image.resize, no antialiasing; the other side rounded to the nearest "
             f"pixel) -> central {crop}x{crop} crop (offset (size - {crop}) // 2 on each axis)")
    resize.update(shorter_side=shorter_side(crop))
    central_crop = {"height": crop, "width": crop}
  return {
      "description": (f"RGB uint8 image (height, width, 3) -> {steps} -> x / 127.5 - 1, "
                      "float32 in [-1, 1]."),
      "recipe": recipe,
      "resize": resize,
      "central_crop": central_crop,
      "scale": 1 / 127.5,
      "offset": -1.0,
      "input_range": [0, 255],
      "output_range": [-1.0, 1.0],
      "channels": "RGB",
  }


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
