"""`config.remat`: the same network and gradients, fewer activations kept for the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import residuals
from big_transfer import errors, models
from big_transfer.training import losses

POLICIES = ("none", "unit", "stage")


def _model(remat, depth=(2, 2, 2, 2)):
  # Two units per stage, so that "stage" keeps fewer activations than "unit".
  return models.ResNetV2(depth=depth, width=1, num_classes=5, remat=remat)


def _params(model, size=16):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]


def test_remat_keeps_parameter_names_and_shapes():
  shapes = [jax.tree.map(lambda a: (a.shape, a.dtype), _params(_model(r))) for r in POLICIES]
  assert shapes[0] == shapes[1] == shapes[2]


def test_remat_gives_the_same_gradients():
  images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3), minval=-1, maxval=1)
  labels = jax.nn.one_hot(jnp.arange(4) % 5, 5)
  # Two stages, the first of two units: each policy wraps something, and three compiles stay
  # short.
  depth = (2, 1)
  params = _model("none", depth).init(jax.random.key(0), images)["params"]
  # A non-zero head, so that gradients reach the body.
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)

  def gradients(remat):
    model = _model(remat, depth)
    loss = lambda p: losses.softmax_cross_entropy(model.apply({"params": p}, images), labels)
    return jax.jit(jax.grad(loss))(params)

  reference = gradients("none")
  assert float(jnp.max(jnp.abs(reference["block1_unit01"]["conv1"]["kernel"]))) > 0
  # Recomputed activations are fused and rounded differently: float32 noise of ~5e-6 of a
  # kernel's largest gradient (a remat that recomputed anything else would be off by far more).
  for remat in ("unit", "stage"):
    for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(gradients(remat))[0],
                                 jax.tree.leaves(reference)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * float(jnp.max(jnp.abs(want))),
                                 err_msg=f"remat={remat} {jax.tree_util.keystr(path)}")


def test_remat_lowers_the_activations_kept_for_the_backward_pass():
  kept = {r: residuals.activation_bytes(_model(r), _params(_model(r)), 4, 32) for r in POLICIES}
  assert kept["unit"] < kept["none"] / 2
  assert kept["stage"] < kept["unit"]


def test_unknown_remat_policy_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="remat must be one of.*'layer'"):
    models.create("R14x1", remat="layer")
