"""The published BiT checkpoint layout (BiT-S-R50x1.npz, BiT-M-R101x3.npz, ...).

One flat `.npz` with keys such as `resnet/block1/unit01/a/standardized_conv2d/kernel`; timm
and the original PyTorch/TF2 code load the same files. This module maps that layout to and
from the parameter tree of `ResNetV2`, and merges pretrained parameters into a freshly
initialized model for fine-tuning.
"""

import dataclasses
import io
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from big_transfer import atomic, errors
from big_transfer.models.resnetv2 import BLOCKS_PER_DEPTH, ROOT_FEATURES, ResNetV2, depth_of

_ROOT_KERNEL = "resnet/root_block/standardized_conv2d/kernel"
_HEAD_KERNEL = "resnet/head/conv2d/kernel"
_UNIT_KEY = re.compile(r"^resnet/block(\d+)/unit(\d+)/a/standardized_conv2d/kernel$")

# Our unit's sub-module -> its place in the published unit ("a", "b", "c" are the three
# pre-activation layers; the projection hangs off "a").
_UNIT_LAYERS = {
    "gn1": "a/group_norm", "conv1": "a/standardized_conv2d", "conv_proj": "a/proj/standardized_conv2d",
    "gn2": "b/group_norm", "conv2": "b/standardized_conv2d",
    "gn3": "c/group_norm", "conv3": "c/standardized_conv2d",
}
_NORM_PARAMS = {"scale": "gamma", "bias": "beta"}
# Modules of our networks that no published checkpoint holds: the norm of a normalized stem
# feature map (`ResNetV2.normalize_features`; BiT never normalizes its root). They keep their
# initial values and do not make the architectures differ.
_UNPUBLISHED_MODULES = ("stem_norm",)
_MODULE_NAME = re.compile(r"^block(\d+)_unit(\d+)$")


@dataclasses.dataclass(frozen=True)
class NpzInfo:
  """What a published-layout file holds.

  Attributes:
    depth: conventional depth (50, 101, ...) or the units per stage when non-standard.
    width: width multiplier.
    blocks: units per stage.
    num_classes: head size, or None for a file without a head.
    num_params: total number of parameters in the file.
  """
  depth: int | tuple[int, ...]
  width: int
  blocks: tuple[int, ...]
  num_classes: int | None
  num_params: int

  @property
  def name(self) -> str:
    return f"R{depth_of(self.blocks)}x{self.width}"

  def model(self, num_classes: int | None = -1, dtype=jnp.float32) -> ResNetV2:
    """The matching network; `num_classes=-1` keeps the file's head size."""
    classes = self.num_classes if num_classes == -1 else num_classes
    return ResNetV2(depth=self.depth, width=self.width, num_classes=classes, dtype=dtype)


def _published_key(path: tuple[str, ...]) -> str:
  """Maps a flax parameter path such as ('block1_unit01', 'gn1', 'scale') to its npz key."""
  module, *rest = path
  if module == "root_conv":
    return _ROOT_KERNEL
  if module == "norm_pre_head":
    return f"resnet/group_norm/{_NORM_PARAMS[rest[0]]}"
  if module == "head":
    return f"resnet/head/conv2d/{rest[0]}"
  match = _MODULE_NAME.match(module)
  if not match:
    raise ValueError(f"Parameter {'/'.join(path)} is not part of a BiT ResNetV2.")
  layer, param = rest
  leaf = _NORM_PARAMS.get(param, param) if layer.startswith("gn") else param
  return f"resnet/block{match[1]}/unit{match[2]}/{_UNIT_LAYERS[layer]}/{leaf}"


def _flatten(params) -> dict[tuple[str, ...], object]:
  flat = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    flat[tuple(k.key for k in key_path)] = leaf
  return flat


def _unflatten(flat: dict[tuple[str, ...], object]) -> dict:
  tree = {}
  for path, leaf in flat.items():
    node = tree
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = leaf
  return tree


def _to_published(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
  if path == ("head", "kernel"):  # Dense (C, K) -> 1x1 conv (1, 1, C, K).
    return array.reshape(1, 1, *array.shape)
  return array


def _from_published(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
  if path == ("head", "kernel"):
    return array.reshape(array.shape[2:])
  return array


def _read_npz(path) -> dict[str, np.ndarray]:
  path = epath.Path(path)
  if not path.exists():
    raise errors.CheckpointError(f"No BiT checkpoint at {path}: check the path (local or gs://).")
  data = path.read_bytes()
  # By its content first: numpy takes any other file for a pickle and says to allow pickles,
  # which would let the file run code.
  if not zipfile.is_zipfile(io.BytesIO(data)):
    kind = "a single .npy array" if data.startswith(b"\x93NUMPY") else "not a zip file"
    raise errors.CheckpointError(f"{path} is not an .npz archive ({kind}); BiT checkpoints are "
                                 "flat .npz archives of named arrays, such as BiT-M-R50x1.npz.")
  try:
    archive = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise errors.CheckpointError(f"{path} is a damaged .npz archive ({e}); download or export "
                                 "it again.") from None
  arrays = {}
  with archive:
    for key in archive.files:
      try:
        arrays[key] = archive[key]
      except ValueError as e:
        raise errors.CheckpointError(f"{path}: array {key!r} needs pickle to load ({e}); refusing "
                                     "it, as pickled data can run code. Re-save it as a plain "
                                     "numeric array.") from None
  return arrays


def _param_shapes(blocks, width, num_classes) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Shapes of the params of a `ResNetV2`, by flax path, without computing anything."""
  model = ResNetV2(depth=blocks, width=width, num_classes=num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
  return {path: tuple(s.shape) for path, s in _flatten(shapes).items()}


def _architecture(arrays: dict[str, np.ndarray], path) -> tuple[tuple[int, ...], int, int | None]:
  """Reads (blocks, width, num_classes) off the arrays of a published-layout file."""
  if _ROOT_KERNEL not in arrays:
    raise errors.CheckpointError(f"{path} lacks {_ROOT_KERNEL!r}: not a BiT ResNet-v2 checkpoint "
                                 "in the published layout.")
  root = arrays[_ROOT_KERNEL].shape
  if len(root) != 4 or root[:3] != (7, 7, 3) or root[3] % ROOT_FEATURES:
    raise errors.CheckpointError(f"{path}: {_ROOT_KERNEL} has shape {root}, expected (7, 7, 3, 64 "
                                 "* width).")
  units: dict[int, list[int]] = {}
  for key in arrays:
    if match := _UNIT_KEY.match(key):
      units.setdefault(int(match[1]), []).append(int(match[2]))
  if sorted(units) != [1, 2, 3, 4]:
    raise errors.CheckpointError(f"{path}: found stages {sorted(units)}, expected block1..block4.")
  for stage, found in units.items():
    if sorted(found) != list(range(1, len(found) + 1)):
      raise errors.CheckpointError(f"{path}: block{stage} has units {sorted(found)}, expected "
                                   f"1..{len(found)}.")
  head = arrays.get(_HEAD_KERNEL)
  num_classes = None if head is None else int(head.shape[-1])
  return tuple(len(units[s]) for s in (1, 2, 3, 4)), root[3] // ROOT_FEATURES, num_classes


def npz_info(path) -> NpzInfo:
  """Reports the architecture of a published-layout `.npz` (local or gs://)."""
  arrays = _read_npz(path)
  blocks, width, num_classes = _architecture(arrays, path)
  depth = next((d for d, b in BLOCKS_PER_DEPTH.items() if b == blocks), blocks)
  return NpzInfo(depth, width, blocks, num_classes, sum(a.size for a in arrays.values()))


def load_bit_npz(path) -> dict:
  """Loads a published-layout `.npz` into the float32 params tree of the matching `ResNetV2`.

  Build the network with `npz_info(path).model()`. Every array is checked against the shape
  the architecture read off the file implies; errors name the key and both shapes.
  """
  arrays = _read_npz(path)
  blocks, width, num_classes = _architecture(arrays, path)
  param_shapes = _param_shapes(blocks, width, num_classes)
  expected = {_published_key(p): _to_published(p, np.empty(shape, np.uint8)).shape
              for p, shape in param_shapes.items()}
  missing = sorted(set(expected) - set(arrays))
  if missing:
    raise errors.CheckpointError(f"{path}: missing {len(missing)} array(s) of an "
                                 f"R{depth_of(blocks)}x{width}, first {missing[0]!r} with shape "
                                 f"{expected[missing[0]]}.")
  unexpected = sorted(set(arrays) - set(expected))
  if unexpected:
    raise errors.CheckpointError(f"{path}: unexpected array {unexpected[0]!r} (shape "
                                 f"{arrays[unexpected[0]].shape}) for an "
                                 f"R{depth_of(blocks)}x{width}.")
  for key, shape in expected.items():
    if arrays[key].shape != shape:
      raise errors.CheckpointError(f"{path}: {key!r} has shape {arrays[key].shape}, expected "
                                   f"{shape} for an R{depth_of(blocks)}x{width}.")
  return _unflatten({p: _from_published(p, arrays[_published_key(p)].astype(np.float32))
                     for p in param_shapes})


def bit_npz_bytes(params) -> bytes:
  """The content of a `.npz` holding a `ResNetV2` params tree in the published layout, float32."""
  arrays = {_published_key(p): _to_published(p, np.asarray(jax.device_get(leaf), np.float32))
            for p, leaf in _flatten(params).items()}
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def save_bit_npz(params, path) -> None:
  """Writes a `ResNetV2` params tree in the published layout, float32, atomically.

  A failure never leaves a half-written file under the final name nor destroys an existing one.
  """
  atomic.write_bytes(path, bit_npz_bytes(params))


@dataclasses.dataclass(frozen=True)
class MergeReport:
  """What `merge_pretrained` took from the checkpoint and what it left as initialized."""
  loaded: tuple[str, ...]
  reinitialized: tuple[tuple[str, str], ...]  # (parameter, reason)
  unused: tuple[str, ...]

  def summary(self) -> str:
    lines = [f"loaded {len(self.loaded)} pretrained arrays"]
    lines += [f"re-initialized {name}: {why}" for name, why in self.reinitialized]
    lines += [f"not used from the checkpoint: {name}" for name in self.unused]
    return "\n".join(lines)


def architecture(params) -> str:
  """Names the network a params tree belongs to, e.g. "R50x1 (units per stage 3, 4, 6, 3)"."""
  flat = _flatten(params)
  root = flat.get(("root_conv", "kernel"))
  units: dict[int, int] = {}
  for path in flat:
    if match := _MODULE_NAME.match(path[0]):
      units[int(match[1])] = max(units.get(int(match[1]), 0), int(match[2]))
  if root is None or not units:
    return "not a BiT ResNet-v2"
  blocks = tuple(units.get(stage, 0) for stage in range(1, max(units) + 1))
  return (f"R{depth_of(blocks)}x{root.shape[-1] // ROOT_FEATURES} (units per stage "
          f"{', '.join(map(str, blocks))})")


def merge_pretrained(init_params, pretrained, keep_head: bool = False,
                     allow_partial: bool = False) -> tuple[dict, MergeReport]:
  """Fine-tuning params: the pretrained body, and a new head from `init_params`.

  BiT fine-tunes from a zero-initialized head whatever the checkpoint's head holds, even when its
  shape fits (a 1000-class BiT-S head on a 1000-class task, a run's own head).

  Args:
    init_params: params of the model to fine-tune, freshly initialized (its head is zeros).
    pretrained: params of a pretrained model, e.g. from `load_bit_npz`.
    keep_head: take the checkpoint's head when its shape fits (continuing an upstream run).
    allow_partial: load the arrays whose names and shapes fit from a checkpoint of another
      architecture and keep the initial values of the rest; by default that is an error naming
      both architectures.

  Returns:
    (params, report) with `params` shaped like `init_params`.
  """
  init_flat, pre_flat = _flatten(init_params), _flatten(pretrained)
  body = lambda flat: {p: tuple(x.shape) for p, x in flat.items()
                       if p[0] != "head" and p[0] not in _UNPUBLISHED_MODULES}
  if body(init_flat) != body(pre_flat) and not allow_partial:
    raise errors.CheckpointError(
        f"The pretrained weights are of an {architecture(pretrained)}, the model is an "
        f"{architecture(init_params)}: set --config.model to the checkpoint's architecture "
        "(--config.init_partial=true loads only the arrays whose names and shapes fit).")
  merged, loaded, reinitialized = {}, [], []
  for path, init in init_flat.items():
    name = "/".join(path)
    source = pre_flat.get(path)
    fits = source is not None and source.shape == init.shape
    if path[0] == "head" and not keep_head:
      merged[path] = init
      reinitialized.append((name, "fine-tuning starts from a new head (init_keep_head=False)"))
    elif fits:
      merged[path] = jnp.asarray(source, init.dtype)
      loaded.append(name)
    else:
      merged[path] = init
      reinitialized.append((name, "absent from the checkpoint" if source is None else
                            f"checkpoint shape {tuple(source.shape)} != model shape "
                            f"{tuple(init.shape)}"))
  unused = tuple("/".join(p) for p in pre_flat if p not in init_flat)
  report = MergeReport(tuple(loaded), tuple(reinitialized), unused)
  return _unflatten(merged), report
