"""Host batches -> global `jax.Array`s on the mesh, prepared ahead of the train step."""

import queue
import threading
from collections.abc import Iterator

import jax
from absl import logging

# How long the producer waits on a full queue before checking whether the consumer left.
_PUT_TIMEOUT_S = 0.1
# How long closing the iterator waits for the producer to finish the batch it is making.
_JOIN_TIMEOUT_S = 60.0
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
    Its `close()` stops the thread, waiting for the batch it is making (up to a minute).
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

  producer = threading.Thread(target=produce, name="prefetch_to_mesh", daemon=True)
  producer.start()

  def consume():
    try:
      while (item := ready.get()) is not _DONE:
        if isinstance(item, _Failure):
          raise item.error
        yield item
    finally:
      consumer_left.set()
      # A producer still inside TF or JAX when the interpreter exits aborts the process
      # ("FATAL: exception not rethrown"), so closing waits for it to finish its batch.
      producer.join(_JOIN_TIMEOUT_S)
      if producer.is_alive():
        logging.warning("The input pipeline did not hand over a batch within %.0f s of being "
                        "closed; leaving its thread behind.", _JOIN_TIMEOUT_S)

  return consume()
