"""The train loop compiles its programs at the first step and never again, and keeps at most
`step_window.MAX_STEPS_IN_FLIGHT` steps in flight."""

import jax

import cli
from big_transfer.training import loop, step_window

# The event `jax.monitoring` reports for each XLA compilation, by its published name (JAX's own
# constant for it is private).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def test_no_compilation_after_the_first_step(tmp_path, synthetic_data_dir, monkeypatch):
  # XLA reports each compilation (a persistent-cache hit included) as this event; a jitted call
  # that finds its program in JAX's in-memory cache reports nothing.
  compiled = []  # (steps dispatched so far, name of the compiled function)
  steps_dispatched = []

  unfinished = []  # After each step added, how many of the steps added so far are unfinished.

  class CountingWindow(step_window.StepWindow):
    def add(self, outputs):
      steps_dispatched.append(outputs)
      super().add(outputs)
      unfinished.append(sum(not all(x.is_ready() for x in jax.tree.leaves(step))
                            for step in steps_dispatched))

  def on_event(event, seconds, **kwargs):
    del seconds
    if event == BACKEND_COMPILE_EVENT:
      compiled.append((len(steps_dispatched), kwargs.get("fun_name")))

  monkeypatch.setattr(step_window, "StepWindow", CountingWindow)
  config = cli.recipe_config("configs/demo.py:smoke")  # 6 steps, logs every 2 and checkpoints every 3.
  config.data.data_dir = synthetic_data_dir
  config.fewshot.shots = ()
  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    assert loop.train_and_evaluate(config, str(tmp_path))["step"] == config.total_steps
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)
  assert compiled, "no compilation event seen: has JAX renamed " + BACKEND_COMPILE_EVENT + "?"
  assert len(steps_dispatched) == config.total_steps
  # Every step went through the window, which kept the loop at most MAX_STEPS_IN_FLIGHT ahead:
  # 33 steps dispatched between two reads of a result deadlocked XLA:CPU's fake devices.
  assert max(unfinished) <= step_window.MAX_STEPS_IN_FLIGHT
  # The first step compiles (or loads) the train step...
  assert any(step == 0 and "train_step" in name for step, name in compiled), compiled
  # ...and from its dispatch to the last step's, logs and checkpoints between, the step never
  # compiles again; the only compilations are orbax's slicing programs at the first save.
  later = [c for c in compiled if 1 <= c[0] < config.total_steps]
  assert [name for _, name in later if "train_step" in name] == []
  assert {step for step, _ in later} <= {config.checkpoint_every_steps}, later
