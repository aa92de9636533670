"""Specification of the BiT optimizer and the upstream schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_transfer import optim


def _params():
  rng = np.random.default_rng(0)
  return {
      "conv": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)},
      "norm": {"scale": jnp.full((8,), 2.0), "bias": jnp.full((8,), 0.5)},
      "head": {"kernel": jnp.asarray(rng.standard_normal((8, 5)), jnp.float32),
               "bias": jnp.ones((5,))},
  }


def _loss(params):
  return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(params))


def _step(tx, params, loss_fn):
  @jax.jit
  def step(params):
    grads = jax.grad(loss_fn)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)
  return step(params)


def test_weight_decay_equals_l2_term_on_kernels():
  params, lr, wd = _params(), 0.1, 0.01

  def loss_with_l2(p):
    kernels = [p["conv"]["kernel"], p["head"]["kernel"]]
    return _loss(p) + wd / 2 * sum(jnp.sum(k**2) for k in kernels)

  decayed = _step(optim.make_optimizer(lr, momentum=0.0, weight_decay=wd), params, _loss)
  explicit = _step(optim.make_optimizer(lr, momentum=0.0), params, loss_with_l2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), decayed, explicit)


def test_norm_scales_and_biases_are_not_decayed():
  params = _params()
  zero_grad = lambda p: 0.0 * _loss(p)
  moved = _step(optim.make_optimizer(0.1, weight_decay=0.5), params, zero_grad)
  for name in ("scale", "bias"):
    np.testing.assert_array_equal(moved["norm"][name], params["norm"][name])
  np.testing.assert_array_equal(moved["head"]["bias"], params["head"]["bias"])
  assert not np.allclose(moved["conv"]["kernel"], params["conv"]["kernel"])


def test_clipping_bounds_update_norm():
  params, lr, clip = _params(), 0.5, 0.01
  tx = optim.make_optimizer(lr, momentum=0.0, grad_clip_norm=clip)
  grads = jax.tree.map(lambda leaf: 100.0 * jnp.ones_like(leaf), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), lr * clip, rtol=1e-5)


def test_momentum_accumulates_in_float32():
  params = jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), _params())
  tx = optim.make_optimizer(0.1, momentum=0.9)
  _, state = tx.update(params, tx.init(params), params)
  trace = state[0].trace
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(trace))


def test_momentum_is_heavy_ball_sgd():
  params = {"w": jnp.ones((2,))}
  tx = optim.make_optimizer(optax.constant_schedule(0.1), momentum=0.9)
  state = tx.init(params)
  grads = {"w": jnp.ones((2,))}
  updates, state = tx.update(grads, state, params)
  updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["w"], -0.1 * (1 + 0.9), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [({"momentum": 1.0}, "momentum"),
                                             ({"weight_decay": -1e-4}, "weight_decay"),
                                             ({"grad_clip_norm": 0.0}, "grad_clip_norm")])
def test_bad_settings_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optim.make_optimizer(0.1, **kwargs)


def test_upstream_schedule_scales_lr_and_decays_at_epoch_boundaries():
  # 0.03 * 4096 / 256 = 0.48; 10 steps per epoch, decay after epochs 3 and 6.
  schedule = optim.upstream_schedule(0.03, 4096, warmup_steps=5, decay_epochs=(3, 6),
                                     steps_per_epoch=10)
  values = {step: float(schedule(step)) for step in (0, 5, 30, 31, 60, 61, 1000)}
  np.testing.assert_allclose(
      [values[s] for s in (0, 5, 30, 31, 60, 61, 1000)],
      [0.0, 0.48, 0.48, 0.048, 0.048, 0.0048, 0.0048], rtol=1e-5)


def test_upstream_schedule_rejects_bad_steps_per_epoch():
  with pytest.raises(ValueError, match="steps_per_epoch must be positive, got 0"):
    optim.upstream_schedule(0.03, 4096, 5, (30,), steps_per_epoch=0)
