"""Segmentation of the built-in data's objects with a BiT backbone: pre-trained against scratch.

    python -m benchmarks.dense_probe --pretrained=/tmp/bit_demo [--model=R14x1] [--steps=300]

An FPN-style head (1x1 laterals on C2..C5, a top-down sum, one 3x3 conv, a per-pixel logit at
stride 4, upsampled to the input) on `models.create(..., features=("C2", "C3", "C4", "C5"))`,
trained end to end with a per-pixel sigmoid loss on the object masks of `bit_synthetic`'s
downstream classes (`synthetic.render_with_mask`, images the data set never holds), once from
the backbone of `--pretrained` (a training run's workdir or a published-layout .npz) and once
from scratch, with the same seed, data and steps. Prints the test IoU of each and their ratio
(docs/features.md).
"""

import argparse
import json
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_transfer import models
from big_transfer.data import synthetic
from big_transfer.models import interop
from big_transfer.training import trained

TAPS = ("C2", "C3", "C4", "C5")


def masked_images(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """`count` images of the downstream classes, float32 (count, size, size, 3) in [-1, 1], and
  their object masks, float32 (count, size, size) in {0, 1}; `size` divides 64."""
  combos = synthetic.class_combinations("downstream")
  # Seeds the data set's own (config, split, index) triples never take.
  rngs = (np.random.default_rng([seed, 7, i]) for i in range(count))
  drawn = [synthetic.render_with_mask(combos[i % len(combos)], rng) for i, rng in enumerate(rngs)]
  factor = synthetic.IMAGE_SIZE // size
  pool = lambda a: a.reshape(count, size, factor, size, factor, *a.shape[3:]).mean(axis=(2, 4))
  images = pool(np.stack([d[0] for d in drawn]).astype(np.float32)) / 127.5 - 1
  masks = (pool(np.stack([d[1] for d in drawn]).astype(np.float32)) >= 0.5).astype(np.float32)
  return images, masks


class FPNHead(nn.Module):
  """Feature maps {C2..C5} (B, H/s, W/s, C_s) -> per-pixel logits (B, 4 * H/4, 4 * W/4)."""
  channels: int = 64

  @nn.compact
  def __call__(self, maps: dict) -> jnp.ndarray:
    top = None
    for name in reversed(TAPS):  # C5 first: each level adds the coarser one, upsampled.
      lateral = nn.Conv(self.channels, (1, 1), name=f"lateral_{name}")(maps[name])
      if top is not None:
        top = jax.image.resize(top, lateral.shape, "nearest")
        lateral = lateral + top
      top = lateral
    x = nn.relu(nn.GroupNorm(num_groups=32)(nn.Conv(self.channels, (3, 3), name="smooth")(top)))
    logits = nn.Conv(1, (1, 1), name="logits")(x)[..., 0]
    batch, height, width = logits.shape
    return jax.image.resize(logits, (batch, 4 * height, 4 * width), "bilinear")


class Segmenter(nn.Module):
  """A BiT backbone's C2..C5 and an `FPNHead`: images (B, H, W, 3) -> logits (B, H, W)."""
  model: str = "R14x1"

  @nn.compact
  def __call__(self, images):
    depth, width = models.parse_name(self.model)
    backbone = models.ResNetV2(depth=depth, width=width, num_classes=None, features=TAPS,
                               name="backbone")
    logits = FPNHead(name="head")(backbone(images))
    return logits[:, :images.shape[1], :images.shape[2]]


def pixel_loss(logits: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
  """Mean per-pixel sigmoid cross-entropy of logits (B, H, W) against masks (B, H, W)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, masks))


def iou(logits: np.ndarray, masks: np.ndarray) -> float:
  """Intersection over union of the pixels predicted (logit > 0) and the masks, over the set."""
  predicted, truth = np.asarray(logits) > 0, np.asarray(masks) > 0.5
  return float((predicted & truth).sum() / max((predicted | truth).sum(), 1))


def initial_params(model: Segmenter, size: int, backbone=None, seed: int = 0) -> dict:
  """Fresh params; with `backbone` (a `ResNetV2` params tree) its body replaces the backbone's."""
  params = model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))["params"]
  if backbone is not None:
    params = dict(params)
    params["backbone"], _ = interop.merge_pretrained(params["backbone"], backbone)
  return params


def train(model: Segmenter, params: dict, images: np.ndarray, masks: np.ndarray, steps: int,
          batch_size: int, lr: float, seed: int = 0) -> tuple[dict, list[float]]:
  """Adam with a cosine decay over `steps` of random batches; returns params and the losses."""
  optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps))

  @jax.jit
  def step(params, opt_state, batch_images, batch_masks):
    loss, grads = jax.value_and_grad(
        lambda p: pixel_loss(model.apply({"params": p}, batch_images), batch_masks))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = optimizer.init(params), []
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    index = rng.choice(len(images), batch_size, replace=False)
    params, opt_state, loss = step(params, opt_state, images[index], masks[index])
    losses.append(float(loss))
  return params, losses


def evaluate(model: Segmenter, params: dict, images: np.ndarray, masks: np.ndarray,
             batch_size: int = 64) -> float:
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  logits = np.concatenate([apply(params, images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])
  return iou(logits, masks)


def pretrained_backbone(source: str) -> dict:
  """The params of a training run's workdir (its latest checkpoint) or of a published .npz."""
  if source.endswith(".npz"):
    return interop.load_bit_npz(source)
  return trained.load_checkpoint(source).params


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--pretrained", required=True,
                      help="a training run's --workdir or a published-layout .npz")
  parser.add_argument("--model", default="R14x1", help="the backbone, as the checkpoint's")
  parser.add_argument("--resolution", type=int, default=32, help="a divisor of 64")
  parser.add_argument("--train_images", type=int, default=1000)
  parser.add_argument("--test_images", type=int, default=500)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args(argv)
  model = Segmenter(args.model)
  train_set = masked_images(args.train_images, args.resolution, seed=1000 + args.seed)
  test_set = masked_images(args.test_images, args.resolution, seed=2000 + args.seed)
  result = {"model": args.model, "resolution": args.resolution, "steps": args.steps,
            "train_images": args.train_images, "test_images": args.test_images}
  starts = {"pretrained": pretrained_backbone(args.pretrained), "scratch": None}
  for name, backbone in starts.items():
    params = initial_params(model, args.resolution, backbone, args.seed)
    params, losses = train(model, params, *train_set, args.steps, args.batch, args.lr, args.seed)
    result[f"{name}_iou"] = evaluate(model, params, *test_set)
    result[f"{name}_final_loss"] = float(np.mean(losses[-10:]))
  result["iou_ratio"] = result["pretrained_iou"] / max(result["scratch_iou"], 1e-9)
  if args.json:
    print(json.dumps(result))
  else:
    print(f"test IoU: pre-trained {result['pretrained_iou']:.3f}, scratch "
          f"{result['scratch_iou']:.3f}, ratio {result['iou_ratio']:.2f} ({args.model}, "
          f"{args.resolution} px, {args.steps} steps)")
  return result


if __name__ == "__main__":
  main()
