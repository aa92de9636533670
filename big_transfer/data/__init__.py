"""The tf.data input pipeline of BiT: sources, recipes, host sharding, few-shot, device feed.

    from big_transfer import data
    cfg = data.InputConfig.from_config(config)           # config.dataset and config.data
    info = data.dataset_info(cfg)                        # sizes for the HyperRule and the head
    batches = data.train_batches(cfg, global_batch_size, seed, start_step)
    for batch in data.prefetch_to_mesh(batches, sharding): ...

See docs/data.md for the sources, the built-in `bit_synthetic` data set, the recipes and how the
training stream is made exactly resumable.
"""

from big_transfer.data.config import DatasetInfo
from big_transfer.data.config import InputConfig
from big_transfer.data.config import config_section
from big_transfer.data.device_feed import prefetch_to_mesh
from big_transfer.data.pipeline import dataset_info
from big_transfer.data.pipeline import eval_batches
from big_transfer.data.pipeline import split_size
from big_transfer.data.pipeline import train_batches

__all__ = ["DatasetInfo", "InputConfig", "config_section", "dataset_info", "eval_batches",
           "prefetch_to_mesh", "split_size", "train_batches"]
