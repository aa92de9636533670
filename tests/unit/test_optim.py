"""Specification of the BiT optimizer and the one learning-rate schedule every recipe runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_transfer import errors
from big_transfer.recipes import schema as config_lib
from big_transfer.training import optim


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


def _step(tx, params, loss_fn, lr):
  @jax.jit
  def step(params):
    grads = jax.grad(loss_fn)(params)
    direction, _ = tx.update(grads, tx.init(params), params)
    return jax.tree.map(lambda p, d: p - lr * d, params, direction)
  return step(params)


def test_weight_decay_equals_l2_term_on_kernels():
  params, lr, wd = _params(), 0.1, 0.01

  def loss_with_l2(p):
    kernels = [p["conv"]["kernel"], p["head"]["kernel"]]
    return _loss(p) + wd / 2 * sum(jnp.sum(k**2) for k in kernels)

  decayed = _step(optim.make_optimizer(momentum=0.0, weight_decay=wd), params, _loss, lr)
  explicit = _step(optim.make_optimizer(momentum=0.0), params, loss_with_l2, lr)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), decayed, explicit)


def test_norm_scales_and_biases_are_not_decayed():
  params = _params()
  zero_grad = lambda p: 0.0 * _loss(p)
  moved = _step(optim.make_optimizer(weight_decay=0.5), params, zero_grad, lr=0.1)
  for name in ("scale", "bias"):
    np.testing.assert_array_equal(moved["norm"][name], params["norm"][name])
  np.testing.assert_array_equal(moved["head"]["bias"], params["head"]["bias"])
  assert not np.allclose(moved["conv"]["kernel"], params["conv"]["kernel"])


def test_clipping_bounds_update_norm():
  params, clip = _params(), 0.01
  tx = optim.make_optimizer(momentum=0.0, grad_clip_norm=clip)
  grads = jax.tree.map(lambda leaf: 100.0 * jnp.ones_like(leaf), params)
  direction, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(direction), clip, rtol=1e-5)


def test_momentum_accumulates_in_float32():
  params = jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), _params())
  tx = optim.make_optimizer(momentum=0.9)
  _, state = tx.update(params, tx.init(params), params)
  trace = state[0].trace
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(trace))


def test_momentum_is_heavy_ball_sgd():
  params = {"w": jnp.ones((2,))}
  tx = optim.make_optimizer(momentum=0.9)
  state = tx.init(params)
  grads = {"w": jnp.ones((2,))}
  direction, state = tx.update(grads, state, params)
  direction, state = tx.update(grads, state, params)
  np.testing.assert_allclose(direction["w"], 1 + 0.9, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [({"momentum": 1.0}, "momentum"),
                                             ({"weight_decay": -1e-4}, "weight_decay"),
                                             ({"grad_clip_norm": 0.0}, "grad_clip_norm")])
def test_bad_settings_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optim.make_optimizer(**kwargs)


def _schedule(**overrides):
  config = config_lib.base()
  config.update(dict(lr=0.48, warmup_steps=5, total_steps=90, decay_fractions=(1 / 3, 2 / 3)))
  config.update(overrides)
  return optim.Schedule.from_config(config)


def test_schedule_warms_up_linearly_then_decays_after_each_fraction_of_the_run():
  schedule = _schedule()
  assert schedule.decay_steps == (30, 60)
  steps = [0, 1, 5, 30, 31, 60, 61, 89]
  np.testing.assert_allclose([float(schedule.learning_rate(s)) for s in steps],
                             [0.0, 0.096, 0.48, 0.48, 0.048, 0.048, 0.0048, 0.0048], rtol=1e-5)


def test_schedule_without_warmup_starts_at_the_peak():
  assert float(_schedule(warmup_steps=0).learning_rate(0)) == pytest.approx(0.48)


def test_schedule_line_states_rate_steps_and_epochs():
  line = _schedule().describe(batch_size=4096, train_examples=4096 * 9)
  assert line == ("lr 0.48 at global batch 4096, linear warm-up 5 steps = 0.556 epochs, x0.1 "
                  "after steps 30, 60; 90 steps = 10 epochs in all")


@pytest.mark.parametrize("overrides, message", [
    ({"total_steps": -5}, "total_steps must be >= 1, got -5"),
    ({"warmup_steps": 91}, r"warmup_steps must be in \[0, total_steps=90\], got 91"),
    ({"decay_fractions": (0.5, 1.2)}, r"decay_fractions must lie strictly between 0 and 1"),
    ({"lr": 0.0}, "lr must be positive, got 0.0"),
])
def test_schedule_rejects_settings_no_run_can_use(overrides, message):
  with pytest.raises(errors.ConfigError, match=message):
    _schedule(**overrides)


def test_cosine_schedule_warms_up_then_follows_half_a_cosine_to_zero():
  schedule = optim.Schedule(peak_lr=0.4, warmup_steps=10, decay_steps=(), total_steps=110,
                            cosine=True)
  rates = [float(schedule.learning_rate(s)) for s in (5, 10, 60, 110)]
  np.testing.assert_allclose(rates, [0.2, 0.4, 0.4 * 0.5 * (1 + np.cos(np.pi * 0.5)), 0.0],
                             atol=1e-7)


def test_adam_update_times_the_rate_is_big_visions_decoupled_decay_update():
  """big_vision: w <- w - s * (lr * adam(g) + wd * w) on kernels, s the schedule multiplier."""
  params, peak, wd, s = _params(), 0.03, 3e-4, 0.5
  tx = optim.make_adam(wd, peak, grad_clip_norm=None)
  grads = jax.grad(_loss)(params)
  direction, _ = tx.update(grads, tx.init(params), params)
  reference = optax.scale_by_adam(mu_dtype=jnp.bfloat16)  # big_vision's `mu_dtype`.
  adam, _ = reference.update(grads, reference.init(params))
  for path in (("conv", "kernel"), ("norm", "scale")):
    got = params[path[0]][path[1]] - peak * s * direction[path[0]][path[1]]
    decay = wd * params[path[0]][path[1]] if path[1] == "kernel" else 0.0
    want = params[path[0]][path[1]] - s * (peak * adam[path[0]][path[1]] + decay)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
