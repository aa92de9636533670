"""A small ObjectNet 1.0 folder: `images/` and the release's four `mappings/` files.

Three shared classes map to ImageNet {5}, {6, 7} and {9}; a fourth folder is not shared and is
skipped. Each image is a flat grey square whose grey value names its class (INTERIOR) inside a
2-pixel white frame, like the release's frames that the protocol cuts off.
"""

import json

import numpy as np
import tensorflow as tf

# folder -> (ObjectNet class, the ImageNet-1k labels it maps to, images).
SHARED = {"alarm_clock": ("Alarm clock", (5,), 2), "banana": ("Banana", (6, 7), 3),
          "chair": ("Chair", (9,), 2)}
SKIPPED = {"zebra_toy": ("Zebra toy", 4)}
INTERIOR = {"alarm_clock": 40, "banana": 100, "chair": 160, "zebra_toy": 220}
FRAME = 255
SIDE = 20  # pixels, frame included


def _imagenet_name(label: int) -> str:
  return f"imagenet class {label}"


def _id_of_label(label: int) -> int:
  """ImageNet 2012 ids are not the labels: a fixed permutation, as in the release."""
  return (label * 7 + 3) % 1000


def write(root) -> None:
  mappings = root / "mappings"
  mappings.mkdir(parents=True)
  folders = {**{f: c for f, (c, _, _) in SHARED.items()}, **{f: c for f, (c, _) in SKIPPED.items()}}
  (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(folders))
  (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
      {name: "; ".join(_imagenet_name(label) for label in labels)
       for name, labels, _ in SHARED.values()}))
  by_id = {_id_of_label(label): _imagenet_name(label) for label in range(1000)}
  (mappings / "imagenet_to_label_2012_v2").write_text(
      "\n".join(by_id[i] for i in range(1000)) + "\n")
  (mappings / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps(
      {str(label): _id_of_label(label) for label in range(1000)}))
  counts = {**{f: n for f, (_, _, n) in SHARED.items()}, **{f: n for f, (_, n) in SKIPPED.items()}}
  for folder, n in counts.items():
    (root / "images" / folder).mkdir(parents=True)
    image = np.full((SIDE, SIDE, 3), FRAME, np.uint8)
    image[2:-2, 2:-2] = INTERIOR[folder]
    for i in range(n):
      (root / "images" / folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
