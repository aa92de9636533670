"""Host batches -> global `jax.Array`s on the mesh, prepared ahead of the train step."""

from collections.abc import Iterator
import queue
import threading

import jax

# How long the producer waits on a full queue before checking whether the consumer left.
_PUT_TIMEOUT_S = 0.1
_DONE = object()


class _Failure:
  """Carries an exception of the producer thread to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


def prefetch_to_mesh(batches: Iterator[dict], sharding: jax.sharding.NamedSharding,
                     size: int = 2) -> Iterator[dict]:
  """Turns host-local batches into global arrays, `size` steps ahead, in a background thread.

  Every leaf of a batch, (local_batch, ...) on this host, becomes one global jax.Array of
  (local_batch * process_count, ...) laid out by `sharding`, which splits the leading (batch)
  dimension over the mesh axes it names, e.g. NamedSharding(mesh, P(("data", "fsdp"))).

  Args:
    batches: host-local NumPy batches, e.g. from `train_batches` or `eval_batches`.
    sharding: how the global batch lies on the devices.
    size: how many batches to have on the devices ahead of the consumer.

  Returns:
    An iterator of the same dicts of global jax.Arrays. An error in `batches` is raised from it.
  """
  if size < 1:
    raise ValueError(f"size must be >= 1 batch, got {size}.")
  ready = queue.Queue(maxsize=size)
  consumer_left = threading.Event()

  def put(item) -> bool:
    while not consumer_left.is_set():
      try:
        ready.put(item, timeout=_PUT_TIMEOUT_S)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for batch in batches:
        arrays = jax.tree.map(
            lambda local: jax.make_array_from_process_local_data(sharding, local), batch)
        if not put(arrays):
          return
      put(_DONE)
    except BaseException as error:  # Handed to the consumer, which re-raises it.
      put(_Failure(error))

  threading.Thread(target=produce, name="prefetch_to_mesh", daemon=True).start()

  def consume():
    try:
      while (item := ready.get()) is not _DONE:
        if isinstance(item, _Failure):
          raise item.error
        yield item
    finally:
      consumer_left.set()

  return consume()
