"""Image files as a converted data set stores them: byte for byte where they already read right,
re-encoded where they must be, dropped where nothing can read them.

An image is kept as it is when its content is the format its name says (`.jpg`/`.jpeg`: JPEG,
`.png`: PNG), a JPEG is not CMYK, and TensorFlow decodes it (the pipeline's own decoder,
`preprocess.decode`). Otherwise it is re-encoded, with Pillow, as an RGB image of its name's format:
CMYK JPEGs (ImageNet has some; readers disagree on their colours), other content behind an image
name (ImageNet-21k has PNGs named `.JPEG`, which readers that go by name or by the data set's
declared format would mis-read), and files Pillow reads but TensorFlow does not. Files neither
reads are dropped. Each outcome is counted in the conversion report.
"""

import io

import tensorflow as tf
from PIL import Image

from big_transfer.data import preprocess

IMAGE_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
KEPT = "kept"
CMYK = "converted_cmyk"                  # a CMYK JPEG, now an RGB JPEG
WRONG_FORMAT = "converted_format"        # e.g. a PNG named .JPEG, now a JPEG
UNDECODABLE = "converted_undecodable"    # the right format, but only Pillow decodes it
UNREADABLE = "dropped_unreadable"
OUTCOMES = (KEPT, CMYK, WRONG_FORMAT, UNDECODABLE, UNREADABLE)
# Re-encoded JPEGs keep as much of the source as a JPEG can (TFDS's ImageNet builder writes its
# repaired images at 100); they are rare, so their size does not matter.
_JPEG_QUALITY = 95
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def image_format(name: str) -> str | None:
  """"jpeg" or "png" for a file name with an image suffix (any case), else None."""
  suffix = name[name.rfind("."):].lower() if "." in name else ""
  return IMAGE_FORMATS.get(suffix)


def content_format(data: bytes) -> str | None:
  """"jpeg" or "png" by the file's signature, None for anything else."""
  return next((fmt for fmt, magic in _SIGNATURES.items() if data.startswith(magic)), None)


def decoded_size(encoded: tf.Tensor) -> tf.Tensor:
  """int32 (2,) (height, width) of an image, after decoding all of it (fails on a bad file).

  JPEGs are decoded at 1/8 scale, which still reads (and checks) all their data.
  """
  def jpeg():
    with tf.control_dependencies([tf.io.decode_jpeg(encoded, channels=3, ratio=8)]):
      return tf.image.extract_jpeg_shape(encoded)[:2]

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, lambda: tf.shape(preprocess.decode(encoded))[:2])


def _tensorflow_decodes(data: bytes) -> bool:
  try:
    decoded_size(tf.constant(data))
  except tf.errors.InvalidArgumentError:
    return False
  return True


def _is_cmyk(data: bytes) -> bool:
  """Whether a JPEG's header says CMYK (or YCCK, which Pillow also opens as CMYK)."""
  try:
    with Image.open(io.BytesIO(data)) as image:  # Reads the header only.
      return image.mode == "CMYK"
  except (OSError, ValueError, Image.DecompressionBombError):
    return False  # The decode check decides.


def repair(data: bytes, name: str) -> tuple[bytes | None, str]:
  """The bytes to store for the image file `name` (whose suffix is an image suffix), and what was
  done: one of OUTCOMES. The bytes are None for a dropped file."""
  fmt = image_format(name)
  actual = content_format(data)
  if actual == fmt and not (fmt == "jpeg" and _is_cmyk(data)) and _tensorflow_decodes(data):
    return data, KEPT
  try:
    with Image.open(io.BytesIO(data)) as image:
      mode = image.mode
      rgb = image.convert("RGB")  # Decodes all of it: a truncated file fails here.
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None, UNREADABLE
  out = io.BytesIO()
  if fmt == "jpeg":
    rgb.save(out, "JPEG", quality=_JPEG_QUALITY)
  else:
    rgb.save(out, "PNG")
  if actual != fmt:
    return out.getvalue(), WRONG_FORMAT
  return out.getvalue(), CMYK if mode == "CMYK" else UNDECODABLE
