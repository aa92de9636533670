"""BiT-S: upstream pre-training on ILSVRC-2012 (1.28M images, 1k classes), the paper's recipe.

    python -m big_transfer.main --config=configs/bit_s.py:model=BiT-S-R50x1 \
        --workdir=gs://BUCKET/bit_s --config.data.data_dir=gs://BUCKET/tensorflow_datasets

90 epochs, lr x0.1 at epochs 30, 60 and 80 (see upstream.set_recipe for the rest).
Arguments: model (default BiT-S-R50x1), dtype (bfloat16 or float32).
"""

from big_transfer.data import dataset_table
from big_transfer.recipes import schema as config_lib
from big_transfer.recipes import upstream

# Upstream trains on the whole ILSVRC-2012 training split (fine-tuning keeps 1% of it out as a
# minival; upstream does not).
ILSVRC2012_TRAIN_IMAGES = dataset_table.lookup("imagenet2012").split_sizes["train"]


def get_config(arg: str = ""):
  args = config_lib.parse_arg(arg, model="BiT-S-R50x1", dtype="bfloat16")
  config = config_lib.base()
  config.model = args["model"]
  config.model_dtype = args["dtype"]
  config.dataset = "imagenet2012"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  upstream.set_recipe(config, ILSVRC2012_TRAIN_IMAGES, epochs=90,
                                 decay_epochs=(30, 60, 80))
  # ImageNet-1k's minival, validation, v2 and ReaL, as big_vision's BiT configs evaluate them;
  # a set that is not prepared is named in a warning at the start and skipped.
  config.evals = upstream.IMAGENET_EVALS
  return config
