"""Evaluation passes: top-1 on an eval split and few-shot linear probes on frozen features.

Both read the eval pipeline (every example once across hosts, padding masked out) and run the
steps of `steps.py` on global batches. The jitted functions take the model as a static
argument, so repeated evaluations in one run compile once.
"""

import dataclasses

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_transfer import data, fewshot, models, sharding, steps

_eval_step = jax.jit(steps.eval_step, static_argnames=("model", "loss_name"))
_features_step = jax.jit(steps.features_step, static_argnames=("model",))


def top1(params, model, input_cfg: data.InputConfig, batch_size: int, mesh,
         loss_name: str) -> dict:
  """Top-1 accuracy and mean loss over the whole eval split: {"accuracy", "loss", "examples"}."""
  totals = None
  for batch in data.prefetch_to_mesh(data.eval_batches(input_cfg, batch_size),
                                     sharding.batch_sharding(mesh)):
    sums = _eval_step(params, batch, model=model, loss_name=loss_name)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss"]) / count,
          "examples": int(totals["count"])}


def _features(params, feature_model, input_cfg, split, batch_size, mesh):
  """Features (N, D) and integer labels (N,) of every real example of `split`, on every host."""
  feats, labels, masks = [], [], []
  for batch in data.prefetch_to_mesh(data.eval_batches(input_cfg, batch_size, split=split),
                                     sharding.batch_sharding(mesh)):
    gathered = multihost_utils.process_allgather(
        {"features": _features_step(params, batch["image"], model=feature_model),
         "label": batch["label"], "mask": batch["mask"]}, tiled=True)
    feats.append(gathered["features"])
    labels.append(np.argmax(gathered["label"], axis=-1))
    masks.append(gathered["mask"] > 0)
  keep = np.concatenate(masks)
  return np.concatenate(feats)[keep], np.concatenate(labels)[keep]


def fewshot_probes(params, model: models.ResNetV2, datasets: dict[str, data.InputConfig],
                   shots: tuple[int, ...], batch_size: int, mesh, seed: int = 0,
                   l2_reg: float = fewshot.DEFAULT_L2_REG) -> dict:
  """Linear-probe accuracy with K examples per class on frozen pre-logits features.

  Features of the train split are computed once; each K draws its examples from them with
  `seed` (the same draw on every host and every evaluation).

  Args:
    datasets: name -> input config (eval recipe, train/eval splits) of each downstream set.
    shots: the K values, e.g. (1, 5, 10).
  Returns:
    {"<name>/<K>shot": accuracy on the set's eval split}.
  """
  feature_model = dataclasses.replace(model, num_classes=None)
  results = {}
  for name, cfg in datasets.items():
    num_classes = data.dataset_info(cfg).num_classes
    train_x, train_y = _features(params, feature_model, cfg, cfg.train_split, batch_size, mesh)
    test_x, test_y = _features(params, feature_model, cfg, cfg.eval_split, batch_size, mesh)
    for k in shots:
      chosen = fewshot.fewshot_indices(train_y, k, seed, num_classes)
      results[f"{name}/{k}shot"] = float(fewshot.linear_probe_accuracy(
          train_x[chosen], train_y[chosen], test_x, test_y, num_classes, l2_reg))
  return results
