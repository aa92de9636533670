"""The jitted train step on different meshes, with accumulation and in bfloat16."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_transfer import models, sharding
from big_transfer.training import experiment, optim, steps

MODEL = models.ResNetV2(depth=(1, 1, 1, 1), width=1, num_classes=5)
OPTIMIZER = optim.make_optimizer(weight_decay=1e-4)
SCHEDULE = optim.Schedule(peak_lr=0.1, warmup_steps=1, decay_steps=(2,), total_steps=3)
_ONE_DEVICE = sharding.make_mesh(1, 1, devices=jax.devices()[:1])


def _batches(n_steps, batch_size=16, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.uniform(-1, 1, (batch_size, 32, 32, 3)).astype(np.float32),
           "label": np.eye(5, dtype=np.float32)[rng.integers(0, 5, batch_size)]}
          for _ in range(n_steps)]


@functools.cache
def _compiled(mesh, model, grad_accum_steps):
  """The steps as every run builds them (`experiment.jit_steps`), compiled once per session."""
  create = functools.partial(steps.create_train_state, model=model, optimizer=OPTIMIZER,
                             image_shape=(32, 32, 3))
  # A low threshold, so that the tiny model's kernels really are split over `fsdp`.
  shardings = sharding.param_shardings(jax.eval_shape(create, jax.random.key(0)), mesh,
                                       min_fsdp_size=2**10)
  jitted = experiment.jit_steps(model, OPTIMIZER, SCHEDULE, mesh, shardings, "softmax_xent",
                                grad_accum_steps, (32, 32, 3))
  return jitted, shardings


def _train(mesh, batches, model=MODEL, grad_accum_steps=1):
  """Runs the train step as a run does: sharded state, donated, batch over the mesh."""
  jitted, shardings = _compiled(mesh, model, grad_accum_steps)
  sharding.check_batch_size(len(batches[0]["label"]), mesh, grad_accum_steps)
  state = jitted.create(jax.random.key(0))
  losses = []
  for batch in batches:
    state, metrics = jitted.train(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
  return state, losses, shardings


def _assert_params_close(a, b, rtol):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = max(np.max(np.abs(y)), 1e-6)
    assert np.max(np.abs(x - y)) / scale <= rtol, jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def single_device_run():
  return _train(_ONE_DEVICE, _batches(3))


def test_weights_agree_across_meshes(single_device_run):
  # Data and fsdp sharding together; data parallelism over all 8 devices is compared in the
  # accumulation test below (one train-step compile less).
  reference, ref_losses, _ = single_device_run
  state, losses, shardings = _train(sharding.make_mesh(4, 2), _batches(3))
  # The comparison means something only if some parameters really are sharded.
  assert any("fsdp" in s.spec for s in jax.tree.leaves(shardings.params))
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
  _assert_params_close(state.params, reference.params, rtol=1e-4)


def test_gradient_accumulation_equals_full_batch(single_device_run):
  reference, ref_losses, _ = single_device_run
  # 16 examples = 2 micro-batches x 8 devices x 1 example each: data parallel over all the
  # devices and accumulation, against one device and one batch.
  state, losses, _ = _train(sharding.make_mesh(8, 1), _batches(3, batch_size=16),
                            grad_accum_steps=2)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  _assert_params_close(state.params, reference.params, rtol=1e-5)


def test_bfloat16_training_keeps_float32_state():
  model = models.ResNetV2(depth=(1, 1, 1, 1), width=1, num_classes=5, dtype=jnp.bfloat16)
  state, losses, _ = _train(sharding.make_mesh(4, 2), _batches(2), model=model)
  assert all(np.isfinite(losses))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} == {jnp.dtype(jnp.float32)}


def test_non_finite_loss_is_recorded_and_its_update_skipped():
  batches = _batches(3)
  batches[1]["image"][0, 0, 0, 0] = np.nan
  state, losses, _ = _train(_ONE_DEVICE, batches[:2])
  assert int(state.first_bad_step) == 1 and int(state.step) == 2
  good, _, _ = _train(_ONE_DEVICE, batches[:1])
  _assert_params_close(state.params, good.params, rtol=0)


class _SqrtOfZero(nn.Module):
  """Finite logits (zeros) whose gradient is not: d sqrt(w) / dw at w = 0."""

  @nn.compact
  def __call__(self, images):
    w = self.param("w", nn.initializers.zeros, (5,))
    return jnp.sqrt(w) * jnp.mean(images, axis=(1, 2, 3))[:, None]


def test_non_finite_gradient_with_a_finite_loss_is_skipped_and_the_rate_follows_the_step():
  model = _SqrtOfZero()
  state = steps.create_train_state(jax.random.key(0), model, OPTIMIZER, (32, 32, 3))
  step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=OPTIMIZER,
                                   learning_rate=SCHEDULE.learning_rate))
  batch = _batches(1)[0]
  after, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"])) and not np.isfinite(float(metrics["grad_norm"]))
  assert int(after.first_bad_step) == 0 and int(after.step) == 1
  np.testing.assert_array_equal(after.params["w"], state.params["w"])
  # The skipped update left the optimizer state alone; the rate of the next step is still the
  # schedule's at step 1, not at the optimizer's own count.
  _, metrics = step(after, batch)
  assert float(metrics["learning_rate"]) == pytest.approx(float(SCHEDULE.learning_rate(1)))
  assert float(SCHEDULE.learning_rate(1)) != pytest.approx(float(SCHEDULE.learning_rate(0)))


class _Linear(nn.Module):
  """Logits w * mean(image): finite loss and gradients for any finite image."""

  @nn.compact
  def __call__(self, images):
    w = self.param("w", nn.initializers.ones, (5,))
    return w * jnp.mean(images, axis=(1, 2, 3))[:, None]


def test_an_update_to_non_finite_parameters_is_skipped_though_loss_and_gradients_are_finite():
  model = _Linear()
  state = steps.create_train_state(jax.random.key(0), model, OPTIMIZER, (32, 32, 3))
  step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=OPTIMIZER,
                                   learning_rate=lambda step: jnp.float32(jnp.inf)))
  after, metrics = step(state, _batches(1)[0])
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["grad_norm"]) > 0
  assert int(after.first_bad_step) == 0
  np.testing.assert_array_equal(after.params["w"], state.params["w"])


def test_eval_step_ignores_padding():
  # Random values (a non-zero head, so the loss depends on the images) of the traced shapes: an
  # eager `init` would compile each of its operations.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype),
                        jax.eval_shape(MODEL.init, jax.random.key(0),
                                       jnp.zeros((1, 32, 32, 3)))["params"])
  batch = _batches(1, batch_size=8)[0]
  batch["mask"] = np.array([1, 1, 1, 0, 0, 0, 0, 0], np.float32)
  evaluate = jax.jit(functools.partial(steps.eval_step, model=MODEL))
  sums = evaluate(params, batch)
  assert float(sums["count"]) == 3
  real = {k: v[:3] for k, v in batch.items()}
  real["mask"] = np.ones(3, np.float32)
  np.testing.assert_allclose(float(sums["loss"]), float(evaluate(params, real)["loss"]),
                             rtol=1e-5)


def test_unknown_loss_is_explained():
  with pytest.raises(ValueError, match=r"Unknown loss 'hinge'; choose one of \['sigmoid_xent', "
                                       r"'softmax_xent'\]"):
    steps.loss_function("hinge")
