"""Steps in flight on XLA:CPU's fake devices: bounded by a window, so no collective deadlock (the
train loop's use of it: test_train_compiles.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_transfer import sharding
from big_transfer.training import step_window


def _collective_step():
  """A jitted step with an all-reduce over every device, slow next to its dispatch, and inputs."""
  mesh = sharding.make_mesh()

  @jax.jit
  def step(w, x):
    loss, grad = jax.value_and_grad(lambda w: jnp.mean(jnp.tanh(x @ w) ** 2))(w)
    return w - 0.01 * grad, loss  # grad sums over the sharded batch: an all-reduce.

  w = jax.device_put(np.full((512, 512), 0.01, np.float32), sharding.replicated(mesh))
  x = jax.device_put(np.random.default_rng(0).standard_normal((64 * mesh.size, 512), np.float32),
                     sharding.batch_sharding(mesh))
  jax.block_until_ready(step(w, x))  # Compiled before anything is counted.
  return step, w, x


def _most_unfinished(num_steps: int, window: step_window.StepWindow | None) -> int:
  """The most steps seen unfinished right after a dispatch returned."""
  step, w, x = _collective_step()
  losses, most = [], 0
  for _ in range(num_steps):
    w, loss = step(w, x)
    if window is not None:
      window.add(loss)
    losses.append(loss)
    most = max(most, sum(not earlier.is_ready() for earlier in losses))
  jax.block_until_ready(w)
  return most


def test_window_bounds_the_steps_in_flight():
  assert jax.device_count() == 8
  size, num_steps = 2, 12  # 12 steps: were the window broken, still far from the 33 that deadlock.
  # Unbounded, dispatch outruns the devices...
  assert _most_unfinished(num_steps, None) > size
  # ...and the window holds it to `size` steps.
  assert _most_unfinished(num_steps, step_window.StepWindow(size)) <= size


def test_window_needs_a_step():
  with pytest.raises(ValueError, match="size must be >= 1 step, got 0"):
    step_window.StepWindow(0)
