"""The tf.data input pipeline of BiT: sources, recipes, host sharding, few-shot, device feed.

    from big_transfer import data
    cfg = data.InputConfig.from_config(config)           # config.dataset and config.data
    info = data.dataset_info(cfg)                        # sizes for the HyperRule and the head
    batches = data.train_batches(cfg, global_batch_size, seed, start_step)
    for batch in data.prefetch_to_mesh(batches, sharding): ...

See docs/data.md for the sources, the built-in `bit_synthetic` data set, the recipes and how the
training stream is made exactly resumable.
"""

import importlib

from big_transfer.data.config import DatasetInfo, InputConfig, config_section
from big_transfer.data.device_feed import prefetch_to_mesh

# The pipeline imports TensorFlow; it loads on first use, so that the config's input section and
# the dataset facts above import where only JAX is installed (the compute core, a GPU machine).
_PIPELINE = ("check_eval_set", "dataset_info", "eval_batches", "eval_set_pass", "split_size",
             "train_batches")


def __getattr__(name):
  if name in _PIPELINE:
    return getattr(importlib.import_module("big_transfer.data.pipeline"), name)
  raise AttributeError(f"module 'big_transfer.data' has no attribute {name!r}")


__all__ = ["DatasetInfo", "InputConfig", "check_eval_set", "config_section", "dataset_info",
           "eval_batches", "eval_set_pass", "prefetch_to_mesh", "split_size", "train_batches"]
