"""Handing steps to XLA: a few steps ahead of the devices, never many.

A jitted call returns once its program is enqueued, so a loop that reads no result runs ahead of
the devices until something blocks it. On XLA:CPU with several devices that something deadlocks:
each device takes at most 32 programs in flight, and the launch of a program over the mesh waits
for that admission on a thread of the pool that runs every device's share of the programs, a pool
of max(cores, devices) threads. With fake devices on few cores that is one thread per device, so
while one thread waits for admission, one device's share of the oldest step cannot start; the
devices that did start wait for it in the step's all-reduce until XLA aborts the process
(`rendezvous.cc ... Termination timeout`). `StepWindow` keeps a loop a few steps ahead. See
docs/architecture.md, "Running on CPUs".
"""

import collections

import jax

# Steps a loop may have dispatched and unfinished: the host prepares the next steps while the
# devices compute, and stays far below XLA:CPU's 32 programs per device, leaving room for what
# else a loop dispatches (evaluation, the copies of a checkpoint).
MAX_STEPS_IN_FLIGHT = 4


class StepWindow:
  """Bounds how far a loop of jitted steps runs ahead of the devices.

  Usage: `state, metrics = step(state, batch); window.add(metrics)` once per step.
  """

  def __init__(self, size: int = MAX_STEPS_IN_FLIGHT):
    if size < 1:
      raise ValueError(f"size must be >= 1 step, got {size}.")
    self._size = size
    self._in_flight = collections.deque()

  def add(self, outputs) -> None:
    """Records a dispatched step; returns once at most `size` steps are unfinished.

    Args:
      outputs: arrays the step produced that no later step donates (e.g. its metrics): they are
        ready when the step has finished. Steps must finish in the order they were added, as
        steps chained through their state do.
    """
    self._in_flight.append(outputs)
    while len(self._in_flight) > self._size:
      jax.block_until_ready(self._in_flight.popleft())

