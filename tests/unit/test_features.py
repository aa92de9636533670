"""Feature maps by name (`ResNetV2.features`): strides, channels, dilation, normalized taps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_transfer import errors, models, sharding
from big_transfer.models import interop, resnetv2

TINY = (1, 1, 2, 2)  # Two units in the stages that dilate, so both of their dilations run.


def _shapes(model, size):
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0),
                                                      jnp.zeros((1, *size, 3)))[0])
  return {name: x.shape for name, x in out.items()}


def _param_shapes(model, size=(32, 32)):
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *size, 3)))["params"]
  return {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def _images(size=(40, 32), seed=1):
  return jax.random.uniform(jax.random.key(seed), (2, *size, 3), minval=-1, maxval=1)


def _apply(model, params, images):
  return jax.jit(model.apply)({"params": params}, images)


def _random_params(model, size=(40, 32)):
  """Params with norms away from identity, so taps through a wrong norm would differ.

  Made from the shapes with numpy: an eager `init` would compile each of its operations."""
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *size, 3)))["params"]
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(2)
  shift = {"scale": 1.0, "bias": 0.0}
  return jax.tree.unflatten(treedef, [
      jnp.asarray(shift.get(p[-1].key, 0.0) + (0.3 if p[-1].key in shift else 1.0)
                  * rng.standard_normal(x.shape), x.dtype)
      for p, x in flat])


@pytest.mark.parametrize("variant", list(models.VARIANTS))
def test_feature_info_and_map_shapes_of_every_published_variant(variant):
  width = models.VARIANTS[variant][1]
  info = models.feature_info(f"BiT-M-{variant}")
  assert [i.name for i in info] == list(models.FEATURES)
  assert [i.stride for i in info] == [2, 4, 8, 16, 32]
  assert [i.channels for i in info] == [64 * width, 256 * width, 512 * width, 1024 * width,
                                        2048 * width]
  # Traced, not run: the largest, R152x4, has 928M parameters.
  model = models.create(f"BiT-M-{variant}", num_classes=None, features=models.FEATURES)
  assert _shapes(model, (64, 96)) == {i.name: (1, 64 // i.stride, 96 // i.stride, i.channels)
                                      for i in info}


@pytest.mark.parametrize("output_stride,strides", [(16, [2, 4, 8, 16, 16]),
                                                   (8, [2, 4, 8, 8, 8])])
def test_output_stride_dilates_the_last_stages(output_stride, strides):
  info = models.feature_info("R50x1", output_stride)
  assert [i.stride for i in info] == strides
  model = models.ResNetV2(depth=TINY, num_classes=None, features=models.FEATURES,
                          output_stride=output_stride)
  # Odd sizes: each stride rounds up, as the padded convolutions do.
  assert _shapes(model, (50, 38)) == {
      i.name: (1, -(-50 // i.stride), -(-38 // i.stride), i.channels) for i in info}
  # The same parameters as the undilated network: its checkpoints load unchanged.
  assert _param_shapes(model) == _param_shapes(models.ResNetV2(depth=TINY, num_classes=None))


def test_stage_geometry_dilates_the_first_unit_as_the_previous_stage():
  # (stride, first unit's dilation, other units' dilation) per stage, as timm's ResNetV2.
  assert resnetv2.stage_geometry(32) == ((1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1))
  assert resnetv2.stage_geometry(16) == ((1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2))
  assert resnetv2.stage_geometry(8) == ((1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4))


def test_feature_maps_at_stride_32_are_those_of_the_undilated_network():
  headless = models.ResNetV2(depth=TINY, num_classes=None)
  params = _random_params(headless)
  images = _images()
  pre_logits = _apply(headless, params, images)
  normalized = models.ResNetV2(depth=TINY, num_classes=None, features=("C5",),
                               normalize_features=True, output_stride=32)
  c5 = _apply(normalized, params, images)["C5"]
  np.testing.assert_allclose(jnp.mean(c5, axis=(1, 2)), pre_logits, rtol=1e-5, atol=1e-6)
  # Dilation changes nothing before the stage it starts at.
  raw = lambda output_stride: _apply(models.ResNetV2(
      depth=TINY, num_classes=None, features=models.FEATURES, output_stride=output_stride),
      params, images)
  undilated, dilated = raw(32), raw(8)
  for name in ("stem", "C2", "C3"):
    np.testing.assert_array_equal(dilated[name], undilated[name], err_msg=name)
  assert not np.allclose(dilated["C4"][:, ::2, ::2], undilated["C4"])


def test_the_stem_map_is_the_root_convolution_before_the_pool():
  model = models.ResNetV2(depth=TINY, num_classes=None, features=("stem",))
  params = _random_params(model)
  images = _images()
  stem = _apply(model, params, images)["stem"]
  kernel = resnetv2.standardize(params["root_conv"]["kernel"])
  expected = jax.lax.conv_general_dilated(images, kernel, (2, 2), [(3, 3), (3, 3)],
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(stem, expected, rtol=1e-4, atol=1e-4)


def test_normalized_maps_go_through_the_norm_the_network_applies_next():
  features = ("C2", "C3", "C4", "C5")
  raw_model = models.ResNetV2(depth=TINY, num_classes=None, features=features)
  params = _random_params(raw_model)
  normalized_model = models.ResNetV2(depth=TINY, num_classes=None, features=features,
                                     normalize_features=True)
  # Without the stem, the normalized network has exactly the published parameters.
  assert _param_shapes(normalized_model) == _param_shapes(raw_model)
  images = _images()
  raw = _apply(raw_model, params, images)
  normalized = _apply(normalized_model, params, images)
  next_norm = {"C2": "block2_unit01", "C3": "block3_unit01", "C4": "block4_unit01"}
  for name in features:
    norm_params = params[next_norm[name]]["gn1"] if name in next_norm else params["norm_pre_head"]
    expected = jax.nn.relu(resnetv2.GroupNorm().apply({"params": norm_params}, raw[name]))
    np.testing.assert_allclose(normalized[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_normalized_stem_gets_a_new_norm_that_loading_published_weights_keeps(tmp_path):
  classifier = models.ResNetV2(depth=TINY, num_classes=3)
  interop.save_bit_npz(_random_params(classifier), tmp_path / "tiny.npz")
  pretrained = interop.load_bit_npz(tmp_path / "tiny.npz")
  model = models.ResNetV2(depth=TINY, num_classes=None, features=models.FEATURES,
                          normalize_features=True)
  init = _random_params(model, (32, 32))
  params, report = interop.merge_pretrained(init, pretrained)
  assert dict(report.reinitialized) == {"stem_norm/scale": "absent from the checkpoint",
                                        "stem_norm/bias": "absent from the checkpoint"}
  assert set(report.unused) == {"head/kernel", "head/bias"}
  np.testing.assert_array_equal(params["block4_unit01"]["gn1"]["scale"],
                                pretrained["block4_unit01"]["gn1"]["scale"])


@pytest.mark.parametrize("remat", ["unit", "stage"])
def test_remat_gives_the_same_feature_maps(remat):
  make = lambda remat: models.ResNetV2(depth=TINY, num_classes=None, features=models.FEATURES,
                                       normalize_features=True, output_stride=8, remat=remat)
  params = _random_params(make("none"))
  images = _images()
  plain = _apply(make("none"), params, images)
  recomputed = _apply(make(remat), params, images)
  for name in models.FEATURES:
    np.testing.assert_allclose(recomputed[name], plain[name], rtol=1e-6, atol=1e-6)


def test_sharding_rules_place_a_backbone_as_the_classifier_body():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  shapes = lambda model: jax.eval_shape(model.init, jax.random.key(0),
                                        jnp.zeros((1, 32, 32, 3)))["params"]
  backbone = sharding.param_shardings(shapes(models.create(
      "R50x1", num_classes=None, features=models.FEATURES, output_stride=16)), mesh)
  classifier = sharding.param_shardings(shapes(models.create("R50x1", num_classes=10)), mesh)
  del classifier["head"]
  assert backbone == classifier


def test_bfloat16_maps_are_float32():
  model = models.ResNetV2(depth=TINY, num_classes=None, features=models.FEATURES,
                          dtype=jnp.bfloat16)
  params = _random_params(model)
  maps = _apply(model, params, _images())
  assert {m.dtype for m in maps.values()} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("kwargs,message", [
    ({"features": ("C6",)}, r"features must be distinct names from \('stem', 'C2'.*'C6'"),
    ({"features": ("C2", "C2")}, r"distinct names.*\('C2', 'C2'\)"),
    ({"features": ("C5",), "num_classes": 10}, "has no head: pass num_classes=None, not 10"),
    ({"output_stride": 4}, r"output_stride must be one of \(8, 16, 32\), got 4"),
])
def test_bad_feature_options_are_config_errors(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    models.create("R50x1", **{"num_classes": None, **kwargs})
