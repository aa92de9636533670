"""Input pipeline throughput, side by side with a minimal tf.data reference, per host core.

Writes a few hundred ~500x375 JPEGs into a temporary folder and reads them through
`big_transfer.data.train_batches` (`folder:` source) and through a reference pipeline that does
nothing but read, decode_and_crop_jpeg, resize, flip, batch. Both run in the same process, in
alternating rounds, for the upstream recipe (inception crop to 224) and the HyperRule recipe for
large images (448 -> 384). For the HyperRule the reference decodes and resizes only the source
window a 384 crop shows, rounded to whole pixels: cheaper than the released resize to 448 and
crop that ours does, so that row's ratio includes what the exact recipe costs. Each round times
both pipelines back to back and yields their ratio; the median round is reported, which
tolerates other load on a shared machine. Throughput is given per core twice: wall-clock
images/s divided by the cores, and images per CPU-second of this process. Goal: ours >= 0.9 x
reference.

A second table reads the same images, in the upstream recipe, from the folder and from their TFDS
conversions (`big_transfer.data.convert`) in tfrecord and in array_record files (read by random
access, `big_transfer/data/random_access.py`), each as a ratio to the tfrecord set, timed in
alternating rounds the same way.

    python -m benchmarks.input_pipeline [--images 300] [--batch 64] [--batches 10] [--rounds 7]
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from big_transfer import data
from big_transfer.data import convert, preprocess

# The stored forms of the same images that the second table compares: the two conversion
# formats (the first is the base), then the folder itself.
SOURCES = ("tfrecord", "array_record", "folder")


def write_jpegs(folder: str, count: int, classes: int = 4) -> None:
  """Smooth, photo-like JPEGs of 500x375 or 375x500 (random noise would decode far slower)."""
  rng = np.random.default_rng(0)
  for i in range(count):
    height, width = (375, 500) if i % 3 else (500, 375)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    channels = [np.sin(2 * np.pi * (rng.uniform(0.5, 3) * yy + rng.uniform(0.5, 3) * xx)
                       + rng.uniform(0, 6)) for _ in range(3)]
    image = 127.5 + 100 * np.stack(channels, -1) + rng.normal(0, 8, (height, width, 3))
    path = os.path.join(folder, f"class{i % classes}", f"{i}.jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90))


def reference_batches(folder: str, batch: int, recipe: str, precrop: int, crop: int):
  """Read, decode_and_crop_jpeg, resize, flip; nothing else."""
  paths = tf.io.gfile.glob(os.path.join(folder, "*", "*.jpg"))

  def window(shape):
    if recipe == "upstream":
      begin, size, _ = tf.image.sample_distorted_bounding_box(
          shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), min_object_covered=0.0,
          aspect_ratio_range=preprocess.ASPECT_RATIO_RANGE, area_range=preprocess.AREA_RANGE,
          use_image_if_no_bounding_boxes=True)
      return tf.concat([begin[:2], size[:2]], 0)
    size = tf.cast(tf.cast(shape[:2], tf.float32) * crop / precrop, tf.int32)
    begin = tf.cast(tf.random.uniform([2]) * tf.cast(shape[:2] - size, tf.float32), tf.int32)
    return tf.concat([begin, size], 0)

  def load(path):
    encoded = tf.io.read_file(path)
    image = tf.image.decode_and_crop_jpeg(encoded, window(tf.image.extract_jpeg_shape(encoded)),
                                          channels=3)
    return tf.image.random_flip_left_right(tf.image.resize(image, (crop, crop)))

  ds = tf.data.Dataset.from_tensor_slices(paths).repeat().shuffle(len(paths))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def throughput(batches, batch: int, count: int) -> tuple[float, float]:
  """(images per wall-clock second, images per CPU-second of this process) over `count` batches."""
  for _ in range(3):  # Warm-up: thread pools, autotuning.
    next(batches)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(count):
    next(batches)
  images = batch * count
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=300)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=7)
  args = parser.parse_args()
  cores = len(os.sched_getaffinity(0))
  recipes = {"upstream 224": ("upstream", 256, 224), "HyperRule 448->384": ("finetune", 448, 384)}
  with tempfile.TemporaryDirectory() as folder:
    write_jpegs(folder, args.images)
    print(f"{args.images} JPEGs of ~500x375, batch {args.batch}, {args.batches} timed batches per "
          f"round, median of {args.rounds} rounds, {cores} cores.")
    print(f"{'recipe':20s} {'images/s/core: ours':>20s} {'reference':>10s} {'ratio':>6s}   "
          f"{'images/CPU-s: ours':>19s} {'reference':>10s} {'ratio':>6s}")
    for name, (recipe, precrop, crop) in recipes.items():
      cfg = data.InputConfig(dataset=f"folder:{folder}", recipe=recipe, precrop=precrop, crop=crop)
      data.dataset_info(cfg)  # Checks the folder's images once, outside the timing.
      rounds = []
      for _ in range(args.rounds):
        reference = throughput(reference_batches(folder, args.batch, recipe, precrop, crop),
                               args.batch, args.batches)
        ours = throughput(data.train_batches(cfg, args.batch, seed=0, process_index=0,
                                             process_count=1), args.batch, args.batches)
        rounds.append((ours[0] / cores, reference[0] / cores, ours[0] / reference[0],
                       ours[1], reference[1], ours[1] / reference[1]))
      median = np.median(np.array(rounds), axis=0)
      print(f"{name:20s} {median[0]:20.1f} {median[1]:10.1f} {median[2]:6.2f}   "
            f"{median[3]:19.1f} {median[4]:10.1f} {median[5]:6.2f}")
    compare_sources(folder, args, cores)


def compare_sources(folder: str, args, cores: int) -> None:
  """The upstream recipe on the folder and on its tfrecord and array_record conversions, each
  against the tfrecord set in alternating rounds."""
  with tempfile.TemporaryDirectory() as data_dir:
    datasets = {"folder": (f"folder:{folder}", None)}
    for file_format in SOURCES[:2]:
      convert.convert(f"folder:{folder}", f"bench_{file_format}",
                      os.path.join(data_dir, file_format), shards=4, file_format=file_format)
      datasets[file_format] = (f"bench_{file_format}", os.path.join(data_dir, file_format))
    configs = {source: data.InputConfig(dataset=datasets[source][0],
                                        data_dir=datasets[source][1], recipe="upstream",
                                        precrop=256, crop=224) for source in SOURCES}
    for cfg in configs.values():
      data.dataset_info(cfg)  # Opens each source once, outside the timing.
    rounds = {source: [] for source in SOURCES}
    for _ in range(args.rounds):
      measured = {source: throughput(data.train_batches(cfg, args.batch, seed=0, process_index=0,
                                                        process_count=1),
                                     args.batch, args.batches)
                  for source, cfg in configs.items()}
      base_wall, base_cpu = measured[SOURCES[0]]
      for source, (wall, cpu) in measured.items():
        rounds[source].append((wall / cores, wall / base_wall, cpu, cpu / base_cpu))
    print(f"\nThe same images, upstream 224, as a ratio to the {SOURCES[0]} set:")
    print(f"{'source':20s} {'images/s/core':>14s} {'ratio':>6s}   {'images/CPU-s':>13s} "
          f"{'ratio':>6s}")
    for source in SOURCES:
      median = np.median(np.array(rounds[source]), axis=0)
      print(f"{source:20s} {median[0]:14.1f} {median[1]:6.2f}   {median[2]:13.1f} "
            f"{median[3]:6.2f}")


if __name__ == "__main__":
  main()
