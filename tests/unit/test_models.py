"""The flax ResNetV2 against an independent reference, the named variants, and bf16."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bit_reference
from big_transfer import errors, models
from big_transfer.models import interop, resnetv2
from big_transfer.training import losses


def _rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
               / np.max(np.abs(np.asarray(b, np.float64))))


def _images(n=2, size=128, seed=1):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1, maxval=1)


@pytest.fixture(scope="module", params=[50, 101], ids=["R50x1", "R101x1"])
def published(request, tmp_path_factory):
  """Random weights in the published layout, written to disk as a BiT npz."""
  weights = bit_reference.random_published_weights(request.param, 1, num_classes=7)
  path = tmp_path_factory.mktemp("ckpt") / f"R{request.param}x1.npz"
  np.savez(path, **weights)
  return request.param, weights, path


@pytest.fixture(scope="module", params=[50, 101], ids=["R50x1", "R101x1"])
def published_trained_like(request, tmp_path_factory):
  """As `published`, with residual branches scaled down as in trained networks."""
  weights = bit_reference.random_published_weights(request.param, 1, num_classes=7,
                                                   branch_gain=0.1)
  path = tmp_path_factory.mktemp("ckpt") / f"R{request.param}x1.npz"
  np.savez(path, **weights)
  return path


def test_logits_match_independent_reference(published):
  depth, weights, path = published
  params = interop.load_bit_npz(path)
  model = interop.npz_info(path).model()
  assert (model.depth, model.width, model.num_classes) == (depth, 1, 7)
  images = _images()
  ours = jax.jit(model.apply)({"params": params}, images)
  reference = bit_reference.forward({k: jnp.asarray(v) for k, v in weights.items()}, images)
  assert ours.dtype == jnp.float32 and ours.shape == (2, 7)
  assert _rel_err(ours, reference) < 1e-3


def test_bfloat16_logits_close_to_float32(published_trained_like):
  path = published_trained_like
  params = interop.load_bit_npz(path)
  images = _images()
  # Jitted as in the test above: the same program, which the compilation cache serves.
  f32 = jax.jit(interop.npz_info(path).model().apply)({"params": params}, images)
  bf16 = jax.jit(interop.npz_info(path).model(dtype=jnp.bfloat16).apply)({"params": params}, images)
  assert bf16.dtype == jnp.float32
  assert _rel_err(bf16, f32) < 2e-2


def test_root_max_pool_pads_with_zeros_not_minus_infinity():
  # Make the root convolution output -1 everywhere and look at what the first unit receives:
  # pooling windows at the border overlap the padding, so with zeros their maximum is 0.
  model = models.ResNetV2(depth=[1, 1, 1, 1], width=1, num_classes=None)
  images = jnp.zeros((1, 32, 32, 3))
  # The values of the parameters do not matter: the root convolution's output is replaced.
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(model.init, jax.random.key(0), images)["params"])

  def pooled_input(params):
    seen = {}

    def interceptor(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and context.module.name == "root_conv":
        return -jnp.ones_like(next_fun(*args, **kwargs))
      if context.method_name == "__call__" and context.module.name == "block1_unit01":
        seen["pooled"] = args[0]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      model.apply({"params": params}, images)
    return seen["pooled"]

  # One compiled program (what follows the first unit's input is dead code to XLA), not each
  # operation compiled on its own as an eager call would.
  pooled = np.asarray(jax.jit(pooled_input)(params))
  assert pooled.shape == (1, 8, 8, 64)
  assert np.all(pooled[:, 0, :, :] == 0) and np.all(pooled[:, :, 0, :] == 0)  # border windows
  assert np.all(pooled[:, 1:, 1:, :] == -1)  # windows inside the image


@pytest.mark.parametrize("first_pixel", ["typical", "outlier"])
def test_group_norm_is_exact_for_a_large_mean(first_pixel):
  # Per group: mean 1e4, spread 1, so E[x^2] - E[x]^2 in float32 loses the spread to rounding.
  # "outlier": the first pixel, from which the one-pass statistics are shifted, lies 3.8
  # standard deviations above its group's mean, near the most any value can (sqrt(31) for 32).
  rng = np.random.default_rng(0)
  x = 1e4 + rng.standard_normal((2, 4, 4, 64))
  if first_pixel == "outlier":
    x[:, 0, 0, :] += 30
  x = x.astype(np.float32)
  norm = resnetv2.GroupNorm(jnp.float32)
  ours = norm.apply(norm.init(jax.random.key(0), x), x)
  np.testing.assert_allclose(ours, bit_reference.group_norm_float64(x), atol=2e-3)


def test_group_norm_matches_flax_two_pass_group_norm_and_its_gradients():
  rng = np.random.default_rng(0)
  x = jnp.asarray(3 + 2 * rng.standard_normal((2, 5, 3, 64)), jnp.float32)
  weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  ours = resnetv2.GroupNorm(jnp.float32)
  flax_gn = nn.GroupNorm(num_groups=resnetv2.GN_GROUPS, epsilon=resnetv2.GN_EPSILON,
                         use_fast_variance=False)
  variables = ours.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v + jnp.asarray(rng.standard_normal(v.shape), v.dtype),
                           variables)  # Not the identity scale and zero bias.
  assert jax.tree.structure(variables) == jax.tree.structure(flax_gn.init(jax.random.key(0), x))

  def loss(norm):
    return jax.value_and_grad(lambda v, x: jnp.sum(norm.apply(v, x) * weights), (0, 1))
  (got, got_grads), (want, want_grads) = loss(ours)(variables, x), loss(flax_gn)(variables, x)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(w))))


def test_group_norm_in_bfloat16_keeps_float32_statistics():
  x = jnp.asarray(1e3 + np.random.default_rng(0).standard_normal((2, 4, 4, 64)), jnp.bfloat16)
  norm = resnetv2.GroupNorm(jnp.bfloat16)
  ours = norm.apply(norm.init(jax.random.key(0), x), x)
  assert ours.dtype == jnp.bfloat16
  # bfloat16 holds 1e3 + x to within 4: what is normalized is the rounded input, to bf16 output
  # precision (3 significant digits).
  np.testing.assert_allclose(ours.astype(np.float32), bit_reference.group_norm_float64(np.asarray(
      x.astype(jnp.float32))), atol=3e-2)


def test_head_bias_starts_at_head_bias_init():
  model = models.create("BiT-S-R14x1", num_classes=21_843, head_bias_init=-10.0)
  images = _images(size=32)
  variables = model.init(jax.random.key(0), images)
  np.testing.assert_array_equal(variables["params"]["head"]["bias"], np.full(21_843, -10.0))
  targets = np.zeros((2, 21_843), np.float32)
  targets[:, 5] = 1.0
  loss = float(losses.sigmoid_cross_entropy(model.apply(variables, images), targets))
  # One positive at logit -10 (10 nats) and 21,842 negatives at log(1 + e^-10) each, instead of
  # 21,843 log 2 = 15,140 nats with a zero bias.
  assert loss == pytest.approx(10 + 21_842 * np.log1p(np.exp(-10.0)), rel=1e-4)


def test_weight_standardization_is_per_output_channel():
  kernel = jax.random.normal(jax.random.key(0), (3, 3, 8, 5)) * 4 + 2
  standardized = resnetv2.standardize(kernel)
  np.testing.assert_allclose(standardized.mean(axis=(0, 1, 2)), np.zeros(5), atol=1e-5)
  np.testing.assert_allclose(standardized.std(axis=(0, 1, 2)), np.ones(5), rtol=1e-4)


def test_head_is_zero_initialized_and_none_returns_features():
  model = models.create("BiT-S-R50x1", num_classes=10)
  images = _images(size=64)
  variables = model.init(jax.random.key(0), images)
  assert not np.any(variables["params"]["head"]["kernel"])
  np.testing.assert_array_equal(model.apply(variables, images), np.zeros((2, 10)))
  features = models.create("R50x1", num_classes=None).apply(
      {"params": {k: v for k, v in variables["params"].items() if k != "head"}}, images)
  assert features.shape == (2, 2048) and features.dtype == jnp.float32


def _count(model):
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))


# Parameter counts of timm's resnetv2_*_bit models with a 1000-class head, read off timm
# (`sum(p.numel() for p in timm.create_model("resnetv2_50x1_bit").parameters())`).
TIMM_PARAMS_1000 = {
    "R50x1": 25_549_352, "R50x3": 217_319_080, "R101x1": 44_541_480,
    "R101x3": 387_934_888, "R152x2": 236_335_208, "R152x4": 936_533_224,
}


@pytest.mark.parametrize("variant", sorted(models.VARIANTS))
def test_parameter_count_equals_timm(variant):
  assert _count(models.create(f"BiT-M-{variant}", num_classes=1000)) == TIMM_PARAMS_1000[variant]


@pytest.mark.parametrize("depth", [26, 50, 101, 152, 200])
def test_named_depths_have_their_layer_count(depth):
  # Counted in the network built (shapes only): its convolutions but the projection shortcuts
  # (the convention behind "ResNet-50"), and the head.
  model = models.ResNetV2(depth=depth, width=1, num_classes=10)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  layers = [jax.tree_util.keystr(path) for path, leaf in
            jax.tree_util.tree_flatten_with_path(shapes)[0]
            if path[-1].key == "kernel" and "conv_proj" not in jax.tree_util.keystr(path)]
  assert len(layers) == depth, layers[:5]
  assert models.depth_of(models.blocks_for(depth)) == depth


def test_explicit_blocks_and_any_width():
  model = models.ResNetV2(depth=[1, 2, 1, 1], width=2, num_classes=3)
  # Traced, not run: the network builds from explicit blocks and gives (B, classes) logits.
  logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), _images(size=32))
  assert logits.shape == (2, 3)
  assert variables["params"]["root_conv"]["kernel"].shape == (7, 7, 3, 128)
  assert [k for k in variables["params"] if k.startswith("block2_")] == ["block2_unit01",
                                                                         "block2_unit02"]


@pytest.mark.parametrize("name, message", [
    ("BiT-M-R51x1", "ResNet depth 51 is not one of"),
    ("ResNet50", "Unknown model name 'ResNet50'"),
    ("BiT-X-R50x1", "Unknown model name 'BiT-X-R50x1'"),
    ("R50x0", "has width 0"),
])
def test_bad_model_names_are_explained(name, message):
  with pytest.raises(ValueError, match=message):
    models.create(name)


@pytest.mark.parametrize("width", [0, -1, 1.5])
def test_a_network_of_a_bad_width_is_refused_when_built(width):
  with pytest.raises(errors.ConfigError, match=re.escape(f"has width {width!r}; widths are "
                                                         "positive integers")):
    models.ResNetV2(depth=14, width=width, num_classes=3)


def test_bad_image_shape_is_explained():
  model = models.create("R50x1", num_classes=2)
  with pytest.raises(ValueError, match=r"expects images of shape \(B, H, W, 3\), got \(2, 32, 32\)"):
    model.init(jax.random.key(0), jnp.zeros((2, 32, 32)))
