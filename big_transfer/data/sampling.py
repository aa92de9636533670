"""Processes, per-host batch sizes and few-shot draws (which host reads what: `streams`)."""

from collections.abc import Sequence

import jax
import numpy as np

from big_transfer import errors


def process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """Returns (index, count) of this process; None means "ask JAX". Tests pass both to simulate."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"process_index must be in [0, process_count); got {index} of {count}.")
  return index, count


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """Each host's share of a global batch; it must divide evenly."""
  if global_batch_size < 1 or global_batch_size % process_count:
    raise errors.ConfigError(f"The global batch size {global_batch_size} must be a positive "
                             f"multiple of the number of processes {process_count}; every host "
                             "reads an equal share.")
  return global_batch_size // process_count


def select_per_class(labels: np.ndarray, examples_per_class: int, seed: int,
                     class_names: Sequence[str] | None = None) -> np.ndarray:
  """Draws `examples_per_class` example indices of each class, the same for every host count.

  Args:
    labels: int (n,) label of every example of the split, in split order.
    examples_per_class: K, how many examples to keep per class.
    seed: few-shot seed; class c draws with NumPy seed (seed, c).
    class_names: names used in the error message, if known.

  Returns:
    int64 (num_classes * K,) sorted indices into `labels`.
  """
  num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
  counts = np.bincount(labels, minlength=num_classes)
  smallest = int(np.argmin(counts))
  if examples_per_class > counts[smallest]:
    name = f"{class_names[smallest]!r} (label {smallest})" if class_names else f"label {smallest}"
    raise errors.DataError(f"examples_per_class={examples_per_class} is more than class {name} "
                           f"has: {counts[smallest]} examples in the train split. Lower "
                           f"examples_per_class to at most {counts[smallest]} or use a larger "
                           "train split.")
  chosen = [np.random.default_rng([seed, c]).choice(np.flatnonzero(labels == c),
                                                    examples_per_class, replace=False)
            for c in range(num_classes)]
  return np.sort(np.concatenate(chosen)).astype(np.int64)
