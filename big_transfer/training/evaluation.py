"""Evaluation passes: top-1 on an eval split and few-shot linear probes on frozen features.

Both read the eval pipeline (every example once across hosts, padding masked out) and run the
run's jitted steps (`experiment.JittedSteps`) on global batches, so evaluation during training
compiles once and uses the training's shardings.
"""

import logging
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_transfer import data
from big_transfer.data import sampling
from big_transfer.training import experiment, fewshot

# The eval steps' summed hits, by the name of the mean they give; other sums keep their name.
_MEANS = {"correct": "accuracy", "agree": "agreement"}


class TeacherPredictions:
  """A distillation run's teachers on the eval split: their probabilities and top-1, computed
  by the first evaluation and kept for the later ones.

  The teachers are frozen and the eval split is read in a fixed order, so both are constants of
  the run; later evaluations compare the student with the kept probabilities instead of running
  the teachers again (an R152x2 teacher's forward is most of an R50x1 student's evaluation).
  The probabilities stay on the devices, laid out like the eval batches: eval examples x classes
  float32 in all, split over every device of the job (ImageNet's validation split: 50,000 x
  1,000 x 4 B = 200 MB in all; 25 MB a device on 8 devices), plus the last batch's padding.

  Attributes:
    accuracy: the teachers' (ensemble's) top-1, None until the first evaluation.
  """

  def __init__(self, teacher_eval: Callable, teacher_params: tuple):
    """`teacher_eval`: `experiment.JittedSteps.teacher_eval`; `teacher_params`: the teachers
    on the mesh (`Experiment.frozen_inputs()[0]`)."""
    self._teacher_eval = teacher_eval
    self._teacher_params = teacher_params
    self._probs: list[jax.Array] | None = None
    self.accuracy: float | None = None

  @property
  def computed(self) -> bool:
    return self._probs is not None

  def paired_with(self, batches: Iterator[dict]) -> Iterator[tuple[dict, jax.Array]]:
    """Each eval batch of `batches` with the teachers' (B, K) probabilities for it: run on the
    first complete pass, which also counts the teachers' top-1; kept from then on."""
    if self._probs is not None:
      yield from zip(batches, self._probs, strict=True)
      return
    probs, totals = [], None
    for batch in batches:
      batch_probs, sums = self._teacher_eval(self._teacher_params, batch)
      probs.append(batch_probs)
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
      yield batch, batch_probs
    totals = jax.device_get(totals)
    self.accuracy = float(totals["teacher_correct"]) / max(float(totals["count"]), 1.0)
    self._probs = probs


def top1(params, jitted: experiment.JittedSteps, input_cfg: data.InputConfig, batch_size: int,
         batch_sharding, teacher: TeacherPredictions | None = None) -> dict:
  """Means over the whole eval split of what the eval step sums: {"accuracy", "loss",
  "examples"}, and for a distillation run (`teacher`) also "agreement" and "kl"
  (`distill.distance_sums`), and "teacher_accuracy" from the evaluation that ran the teachers
  (the first; later ones reuse their predictions, `TeacherPredictions`).

  A prediction is correct when it is one of the example's true labels (multi-hot targets count
  any of their classes).
  """
  batches = data.prefetch_to_mesh(data.eval_batches(input_cfg, batch_size), batch_sharding)
  runs_teachers = teacher is not None and not teacher.computed
  pairs = (((batch, ()) for batch in batches) if teacher is None else
           ((batch, (probs,)) for batch, probs in teacher.paired_with(batches)))
  totals = None
  for batch, teacher_probs in pairs:
    sums = jitted.eval(params, *teacher_probs, batch)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  means = {_MEANS.get(key, key): float(value) / count for key, value in totals.items()
           if key != "count"}
  if runs_teachers:
    means["teacher_accuracy"] = teacher.accuracy
  return {**means, "examples": int(totals["count"])}


def _features(params, jitted, input_cfg, split, batch_size, batch_sharding):
  """Features (N, D) and integer labels (N,) of every real example of `split`, on every host."""
  feats, labels, masks = [], [], []
  for batch in data.prefetch_to_mesh(data.eval_batches(input_cfg, batch_size, split=split),
                                     batch_sharding):
    gathered = multihost_utils.process_allgather(
        {"features": jitted.features(params, batch["image"]), "label": batch["label"],
         "mask": batch["mask"]}, tiled=True)
    feats.append(gathered["features"])
    labels.append(np.argmax(gathered["label"], axis=-1))
    masks.append(gathered["mask"] > 0)
  keep = np.concatenate(masks)
  return np.concatenate(feats)[keep], np.concatenate(labels)[keep]


def fewshot_probes(params, jitted: experiment.JittedSteps, datasets: dict[str, data.InputConfig],
                   shots: tuple[int, ...], seeds: int, l2_reg: float, batch_size: int,
                   batch_sharding) -> dict:
  """Ridge-probe accuracy with K examples per class on frozen pre-logits features.

  As big_vision's few-shot evaluator: features of each data set's train and test splits are
  computed once; for each seed and K, K examples per class are drawn from the train split
  (`data.sampling.select_per_class`, the same draw on every host and every evaluation) and a
  closed-form ridge probe on standardized features is scored on the test split.

  Args:
    datasets: name -> input config (eval recipe; train_split is the pool the K are drawn
      from, eval_split the test split).
    shots: the K values, e.g. (1, 5, 10, 25). A K larger than a class's examples is skipped with
      a warning.
    seeds: number of draws per K; the result is their mean.
    l2_reg: ridge strength, in units of the standardized features.
  Returns:
    {"<name>/<K>shot": mean accuracy over the draws, "<name>/<K>shot/seed<s>": each draw's}.
  """
  results = {}
  for name, cfg in datasets.items():
    num_classes = data.dataset_info(cfg).num_classes
    train_x, train_y = _features(params, jitted, cfg, cfg.train_split, batch_size,
                                 batch_sharding)
    test_x, test_y = _features(params, jitted, cfg, cfg.eval_split, batch_size, batch_sharding)
    smallest = int(np.bincount(train_y, minlength=num_classes).min())
    for k in shots:
      if k > smallest:
        logging.warning("Few-shot %s: skipping %d-shot, its train split %r has only %d examples "
                        "in its smallest class.", name, k, cfg.train_split, smallest)
        continue
      accuracies = []
      for seed in range(seeds):
        chosen = sampling.select_per_class(train_y, k, seed)
        accuracy = float(fewshot.linear_probe_accuracy(
            train_x[chosen], train_y[chosen], test_x, test_y, num_classes, l2_reg))
        results[f"{name}/{k}shot/seed{seed}"] = accuracy
        accuracies.append(accuracy)
      results[f"{name}/{k}shot"] = float(np.mean(accuracies))
  return results
