"""Our feature maps equal timm's `features_only` maps of our exported npz (R50x1, random weights)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import timm_port
from big_transfer import models
from big_transfer.models import interop


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Random R50x1 params (norms away from identity, a non-zero head) saved as our npz export."""
  model = models.create("R50x1", num_classes=10)
  # Values drawn with NumPy for the traced shapes: an eager init compiles each operation.
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(0)

  def draw(path, x):
    noise = rng.normal(size=x.shape).astype(np.float32)
    leaf = path[-1].key
    return {"scale": 1 + 0.1 * noise, "bias": 0.1 * noise}.get(leaf, noise)

  params = jax.tree.unflatten(treedef, [draw(path, x) for path, x in flat])
  path = tmp_path_factory.mktemp("export") / "R50x1.npz"
  interop.save_bit_npz(params, path)
  return path, params


# Two resolutions, one not square; output stride 8 dilates stage 3 and stage 4, whose first
# unit then dilates by 2, its others by 4.
@pytest.mark.parametrize("size,output_stride", [((64, 64), 32), ((80, 48), 32), ((80, 48), 8)])
def test_feature_maps_equal_timm_features_only(exported, size, output_stride):
  import torch
  timm = timm_port.import_timm()
  path, params = exported
  theirs_model = timm.create_model(
      "resnetv2_50x1_bit", pretrained=True, features_only=True, num_classes=10,
      output_stride=output_stride,
      pretrained_cfg_overlay={"file": str(path), "custom_load": True}).eval()
  ours_model = models.create("R50x1", num_classes=None, features=models.FEATURES,
                             output_stride=output_stride)
  images = np.random.default_rng(1).uniform(-1, 1, (1, *size, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = theirs_model(torch.from_numpy(images).permute(0, 3, 1, 2))
  body = {k: v for k, v in params.items() if k != "head"}
  ours = jax.jit(ours_model.apply)({"params": body}, images)
  info = models.feature_info("R50x1", output_stride)
  assert [i.stride for i in info] == theirs_model.feature_info.reduction()
  assert [i.channels for i in info] == theirs_model.feature_info.channels()
  for spec, their_map in zip(info, theirs):
    their_map = their_map.permute(0, 2, 3, 1).numpy()
    our_map = np.asarray(ours[spec.name])
    assert our_map.shape == their_map.shape, spec.name
    # timm standardizes kernels with eps 1e-8, we with the published 1e-10.
    relative = np.abs(our_map - their_map).max() / np.abs(their_map).max()
    assert relative < 1e-3, f"{spec.name}: {relative}"
