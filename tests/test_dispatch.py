"""Steps in flight on XLA:CPU's fake devices: bounded in the loop, so no collective deadlock."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli
from big_transfer import dispatch, sharding, train


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


def _most_unfinished(num_steps: int, window: dispatch.StepWindow | None) -> int:
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
  assert _most_unfinished(num_steps, dispatch.StepWindow(size)) <= size


def test_window_needs_a_step():
  with pytest.raises(ValueError, match="size must be >= 1 step, got 0"):
    dispatch.StepWindow(0)


def test_the_train_loop_hands_every_step_to_a_window(tmp_path, synthetic_data_dir,
                                                   monkeypatch):
  # Without a window, 33 steps dispatched between two reads of a result (a log, a checkpoint)
  # deadlocked XLA:CPU's fake devices and aborted the run (`rendezvous.cc ... Termination
  # timeout`); a few steps suffice to check that the loop keeps each step in a window.
  unfinished = []  # After each step added, how many of the steps added so far are unfinished.

  class RecordingWindow(dispatch.StepWindow):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      self.added = []

    def add(self, outputs):
      super().add(outputs)
      self.added.append(jax.tree.leaves(outputs))
      unfinished.append(sum(not all(x.is_ready() for x in step) for step in self.added))

  monkeypatch.setattr(dispatch, "StepWindow", RecordingWindow)
  spec = importlib.util.spec_from_file_location("demo", cli.REPO / "configs" / "demo.py")
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  config = demo.get_config("smoke")
  config.data.data_dir = synthetic_data_dir
  config.total_steps = config.log_every_steps = config.checkpoint_every_steps = 6
  config.fewshot.shots = ()
  assert train.train_and_evaluate(config, str(tmp_path))["step"] == 6
  assert len(unfinished) == 6
  assert max(unfinished) <= dispatch.MAX_STEPS_IN_FLIGHT
