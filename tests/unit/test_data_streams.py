"""Which examples each host reads, in which order: held examples (folders, few-shot draws)."""

import collections

import numpy as np
import pytest

from big_transfer import errors
from big_transfer.data import streams

NUM_CLASSES = 5


def _held(n: int) -> streams.HeldExamples:
  """n examples whose "image" is its own index, as bytes."""
  return streams.HeldExamples(np.array([str(i).encode() for i in range(n)], dtype=object),
                              np.arange(n) % NUM_CLASSES, are_paths=False)


def _host_stream(examples, process_index, process_count, start=0, seed=0):
  """The example indices host `process_index` reads from host position `start` on."""
  stream = streams.train_stream(examples, NUM_CLASSES, seed, process_index, process_count,
                                start, shuffle_buffer=1,
                                transform=lambda position, example: example["image"])
  return (int(image) for image in stream.as_numpy_iterator())


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("process_count", [1, 3, 4])
def test_every_held_example_is_read_equally_often_across_hosts(process_count):
  # 50 examples over 3 or 4 hosts: the shares cannot be equal, the reading must still be. Hosts
  # holding 13 and 12 examples each would drift apart by one read per 156.
  n, per_host = 50, 600
  counts = collections.Counter()
  for index in range(process_count):
    counts.update(_take(_host_stream(_held(n), index, process_count), per_host))
  assert set(counts) == set(range(n))
  assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("process_count", [1, 3])
def test_hosts_together_read_each_epoch_as_one_permutation(process_count):
  n, epochs = 10, 3  # 10 examples over 3 hosts: epochs end in the middle of a step.
  hosts = [_take(_host_stream(_held(n), index, process_count), epochs * n)
           for index in range(process_count)]
  stream = [hosts[p % process_count][p // process_count] for p in range(epochs * n)]
  orders = [stream[e * n:(e + 1) * n] for e in range(epochs)]
  for order in orders:
    assert sorted(order) == list(range(n))
  assert len({tuple(order) for order in orders}) == epochs  # Each epoch has its own order.


def test_held_stream_resumes_exactly_at_any_host_position():
  examples = _held(7)
  for index in range(3):
    uninterrupted = _take(_host_stream(examples, index, 3, seed=4), 40)
    for start in (1, 6, 13, 29):
      assert _take(_host_stream(examples, index, 3, start=start, seed=4), 11) == (
          uninterrupted[start:start + 11])


def test_held_eval_stream_reads_every_example_once_across_hosts():
  read = lambda index, count: [int(x) for x in streams.eval_stream(
      _held(11), NUM_CLASSES, index, count, lambda example: example["image"]).as_numpy_iterator()]
  assert read(0, 1) == list(range(11))
  shares = [read(index, 4) for index in range(4)]
  assert sorted(sum(shares, [])) == list(range(11))
  assert [len(share) for share in shares] == [3, 3, 3, 2]


def test_an_empty_train_split_is_a_data_error():
  with pytest.raises(errors.DataError, match="train split has no examples"):
    streams.train_stream(_held(0), NUM_CLASSES, 0, 0, 1, 0, 1, lambda position, example: example)
