"""Evaluators: top-1 and top-5 of an ImageNet-1k classifier on ImageNet and its robustness sets,
scored as the references score them (the sets: `big_transfer.data.eval_sets`; docs/evaluation.md).

A prediction is the argmax of the logits over the classes the set can show: all 1000, the 200
of ImageNet-A and -R (each also reported over all 1000, `accuracy_1000way`), or ObjectNet's 125.
It is a hit when it is one of the classes the example accepts: its label, its ReaL set, the
ImageNet classes of its ObjectNet class. Examples that accept no class (ReaL's empty sets) are
excluded and counted. A head of another label space is mapped to ImageNet-1k's first
(`label_map`, e.g. "i21k_to_i1k" for the 21,843-way BiT-M heads).

The scoring functions are pure NumPy on host arrays; `evaluate` runs one pass: each host scores
its own examples and the counts are summed over processes, so every example counts once.
"""

import contextlib
import math
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from big_transfer import data, errors
from big_transfer.data import class_lists, eval_sets, sampling

# The sums of a pass, in the order they are added over processes.
_SUMS = ("correct", "correct_top5", "correct_1000way", "count", "excluded")


def map_logits(logits: jax.Array, index: np.ndarray) -> jax.Array:
  """(B, K) logits of another head -> (B, 1000) ImageNet-1k logits: column c is logit
  index[c], or -inf where index[c] is -1 (a class the head lacks, never predicted)."""
  taken = jnp.take(logits, jnp.asarray(np.maximum(index, 0)), axis=-1)
  return jnp.where(jnp.asarray(index >= 0), taken, -jnp.inf)


def hits_at_k(logits: np.ndarray, accepted: np.ndarray, allowed: np.ndarray | None,
              k: int) -> np.ndarray:
  """bool (N,): one of the k highest logits among the `allowed` classes is `accepted`.

  Args:
    logits: float (N, C).
    accepted: bool (N, C), the classes each example counts as right.
    allowed: bool (C,), the classes a prediction may be; None for all.
    k: 1 for top-1, 5 for top-5.
  """
  scores = logits if allowed is None else np.where(allowed, logits, -np.inf)
  if k == 1:
    top = np.argmax(scores, axis=1)[:, None]
  else:
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  return np.take_along_axis(accepted, top, axis=1).any(axis=1)


def pass_sums(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, accepts: np.ndarray,
              shown: np.ndarray) -> np.ndarray:
  """The counts of one batch, float64 in the order of _SUMS.

  Args:
    logits: float (N, 1000) ImageNet-1k logits.
    labels: float (N, L) one- or multi-hot labels over the set's own L labels.
    mask: float (N,), 1 for real examples, 0 for padding.
    accepts: bool (L, 1000), the ImageNet classes each label counts as right.
    shown: bool (1000,), the classes the set's images can show (the prediction's choices).
  """
  accepted = (labels > 0).astype(np.float32) @ accepts.astype(np.float32) > 0
  real = mask > 0
  valid = real & accepted.any(axis=1)
  allowed = None if shown.all() else shown
  return np.array([
      np.sum(hits_at_k(logits, accepted, allowed, 1) & valid),
      np.sum(hits_at_k(logits, accepted, allowed, 5) & valid),
      np.sum(hits_at_k(logits, accepted, None, 1) & valid),
      np.sum(valid), np.sum(real & ~valid)], np.float64)


def results(eval_set: eval_sets.EvalSet, sums: np.ndarray, shown: np.ndarray) -> dict:
  """The results of a pass from its summed counts: accuracy, top5, examples, and the variants
  of the set (accuracy_1000way where the set shows a subset, excluded for ReaL)."""
  total = dict(zip(_SUMS, (float(s) for s in sums), strict=True))
  count = max(total["count"], 1.0)
  out = {"accuracy": total["correct"] / count, "top5": total["correct_top5"] / count,
         "examples": int(total["count"])}
  if not shown.all():
    out["accuracy_1000way"] = total["correct_1000way"] / count
    out["classes"] = int(shown.sum())
  if eval_set.label_key:
    out["excluded"] = int(total["excluded"])
  return out


def check(names, label_map: str) -> list[eval_sets.EvalSet]:
  """The evaluation sets of `names` and the label map, checked; ConfigErrors name the bad one."""
  class_lists.label_map_index(label_map)
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise errors.ConfigError(f"evals must be a tuple of evaluator names such as "
                             f"--config.evals='(\"imagenet2012\", \"imagenet_a\")', got {names!r}.")
  sets = [eval_sets.parse(name) for name in names]
  seen = [s.name for s in sets]
  if len(set(seen)) != len(seen):
    raise errors.ConfigError(f"evals names an evaluator twice: {list(names)}.")
  return sets


def check_head(num_classes: int, label_map: str) -> None:
  """Raises a ConfigError unless a head of `num_classes` logits, mapped by `label_map`, gives
  ImageNet-1k's 1000 (what every evaluator scores)."""
  index = class_lists.label_map_index(label_map)
  expected = class_lists.IMAGENET_CLASSES if index is None else class_lists.IMAGENET21K_CLASSES
  if num_classes != expected:
    hint = (" A 21,843-way BiT-M head needs label_map=i21k_to_i1k." if index is None else
            f" label_map={label_map} maps a {expected}-way head.")
    raise errors.ConfigError(f"The model has {num_classes} classes; the evaluators score "
                             f"ImageNet-1k's {class_lists.IMAGENET_CLASSES}.{hint}")


def evaluate(eval_set: eval_sets.EvalSet, params, logits_fn: Callable, *, data_dir: str | None,
             recipe: str, crop: int, batch_size: int,
             batch_sharding: jax.sharding.NamedSharding, label_map: str = "",
             progress: bool = False) -> dict:
  """Scores the model on one evaluation set (see the module's docstring).

  Args:
    logits_fn: (params, images: global (B, crop, crop, 3) split like the batch) -> logits
      (B, K), split like the batch: a 1000-way ImageNet head, or the head `label_map` maps
      (`check_head` first).
    recipe, crop: the evaluation view (`preprocess.eval_view`).
    batch_size: global batch size.
    progress: show a progress bar on stderr (process 0).
  Returns:
    `results`.
  """
  index = class_lists.label_map_index(label_map)
  mapped = None if index is None else jax.jit(lambda logits: map_logits(logits, index),
                                              out_shardings=batch_sharding)
  one = data.eval_set_pass(eval_set, data_dir, recipe, crop, batch_size)
  _, count = sampling.process(None, None)
  num_batches = math.ceil(math.ceil(one.num_examples / count) /
                          sampling.local_batch_size(batch_size, count))
  sums = np.zeros(len(_SUMS))
  from tqdm import tqdm  # The progress bar, only when evaluating.
  bar = tqdm(total=num_batches, desc=eval_set.name, unit="batch", file=sys.stderr,
             disable=not progress or jax.process_index() > 0)
  with contextlib.closing(data.prefetch_to_mesh(one.batches, batch_sharding)) as batches, bar:
    for batch in batches:
      logits = logits_fn(params, batch["image"])
      logits = logits if mapped is None else mapped(logits)
      local = multihost_utils.global_array_to_host_local_array(
          {"logits": logits, "label": batch["label"], "mask": batch["mask"]},
          batch_sharding.mesh, batch_sharding.spec)
      sums += pass_sums(np.asarray(local["logits"], np.float32), np.asarray(local["label"]),
                        np.asarray(local["mask"]), one.accepts, one.shown)
      bar.update()
  total = np.asarray(multihost_utils.process_allgather(sums)).reshape(-1, len(_SUMS)).sum(0)
  return results(eval_set, total, one.shown)
