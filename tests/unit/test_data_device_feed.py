"""prefetch_to_mesh: host batches become global arrays laid out on the 8 fake CPU devices."""

import logging
import threading
import time

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from big_transfer.data import device_feed


@pytest.fixture(scope="module")
def sharding():
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
  return NamedSharding(mesh, P(("data", "fsdp")))


def _host_batches(n):
  for step in range(n):
    yield {"image": np.full((16, 4, 4, 3), step, np.float32) + np.arange(16)[:, None, None, None],
           "label": np.eye(16, 5, dtype=np.float32), "mask": np.ones(16, np.float32)}


def test_batches_become_global_arrays_with_the_requested_sharding(sharding):
  for batch in device_feed.prefetch_to_mesh(_host_batches(3), sharding):
    for array in batch.values():
      assert isinstance(array, jax.Array)
      assert array.sharding == sharding
      assert len(array.addressable_shards) == 8
      assert array.addressable_shards[0].data.shape[0] == 2  # 16 examples over 8 devices.


def test_batches_keep_their_values_and_order(sharding):
  fed = list(device_feed.prefetch_to_mesh(_host_batches(4), sharding, size=2))
  assert len(fed) == 4
  for expected, actual in zip(_host_batches(4), fed, strict=True):
    for name in expected:
      np.testing.assert_array_equal(np.asarray(actual[name]), expected[name])


def test_an_error_in_the_host_batches_reaches_the_consumer(sharding):
  def failing():
    yield from _host_batches(1)
    raise OSError("disk gone")

  fed = device_feed.prefetch_to_mesh(failing(), sharding)
  next(fed)
  with pytest.raises(OSError, match="disk gone"):
    next(fed)


def test_prefetch_size_must_be_positive(sharding):
  with pytest.raises(ValueError, match="size must be >= 1 batch, got 0"):
    device_feed.prefetch_to_mesh(_host_batches(1), sharding, size=0)


def _producers():
  return [t for t in threading.enumerate() if t.name == "prefetch_to_mesh"]


def test_closing_waits_for_the_producer_to_finish_its_batch(sharding):
  # A producer left inside the source when the interpreter exits aborts the process.
  making = threading.Event()

  def slow():
    for batch in _host_batches(10):
      making.set()
      time.sleep(0.3)
      yield batch

  fed = device_feed.prefetch_to_mesh(slow(), sharding, size=1)
  next(fed)
  making.clear()
  assert making.wait(5)  # The producer is inside the source, making the next batch.
  fed.close()
  assert not _producers()


def test_closing_gives_up_on_a_stuck_source_with_a_warning(sharding, monkeypatch, caplog):
  monkeypatch.setattr(device_feed, "_JOIN_TIMEOUT_S", 0.2)
  release = threading.Event()

  def stuck():
    yield from _host_batches(1)
    release.wait()
    yield from _host_batches(1)

  fed = device_feed.prefetch_to_mesh(stuck(), sharding, size=1)
  next(fed)
  with caplog.at_level(logging.WARNING):
    fed.close()
  assert "did not hand over a batch within 0 s of being closed" in caplog.text
  assert _producers()
  release.set()  # The producer then finds the consumer gone and ends.
  for thread in _producers():
    thread.join(5)
  assert not _producers()
