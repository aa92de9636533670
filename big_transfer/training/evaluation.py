"""Evaluation passes: top-1 on an eval split and few-shot linear probes on frozen features.

Both read the eval pipeline (every example once across hosts, padding masked out) and run the
run's jitted steps (`experiment.JittedSteps`) on global batches, so evaluation during training
compiles once and uses the training's shardings.
"""

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_transfer import data

from big_transfer.training import experiment

from big_transfer.training import fewshot
from big_transfer.data import sampling


# The eval steps' summed hits, by the name of the mean they give; other sums keep their name.
_MEANS = {"correct": "accuracy", "teacher_correct": "teacher_accuracy", "agree": "agreement"}


def top1(params, jitted: experiment.JittedSteps, input_cfg: data.InputConfig, batch_size: int,
         batch_sharding, *frozen) -> dict:
  """Means over the whole eval split of what the eval step sums: {"accuracy", "loss",
  "examples"}, and for a distillation run (`frozen`: the teachers' params) also
  "teacher_accuracy", "agreement" and "kl" (`distill.distance_sums`).

  A prediction is correct when it is one of the example's true labels (multi-hot targets count
  any of their classes).
  """
  totals = None
  for batch in data.prefetch_to_mesh(data.eval_batches(input_cfg, batch_size), batch_sharding):
    sums = jitted.eval(params, *frozen, batch)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  means = {_MEANS.get(key, key): float(value) / count for key, value in totals.items()
           if key != "count"}
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
