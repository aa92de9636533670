"""BiT-M: upstream pre-training on ImageNet-21k (14.2M images, 21,843 classes).

    python -m big_transfer.main --config=configs/bit_m.py:model=BiT-M-R101x3 \
        --workdir=gs://BUCKET/bit_m --config.data.data_dir=gs://BUCKET/tensorflow_datasets

ImageNet-21k is multi-label in spirit (overlapping concepts), so it trains with a sigmoid
cross-entropy on multi-hot targets; as in big_vision's ImageNet-21k BiT config the head bias
starts at -10 (each of the 21,843 sigmoids starts near 0, so the first loss is ~1 instead of
~15k) and gradients are clipped at norm 1. 90 epochs, lr x0.1 at epochs 30, 60 and 80. The first
51,200 images are held out for evaluation. Arguments: model, dtype, dataset (the TFDS name under
which ImageNet-21k was prepared).
"""

from big_transfer.recipes import schema as config_lib
from big_transfer.recipes import upstream

IMAGENET21K_IMAGES = 14_197_122
HELD_OUT = 51_200


def get_config(arg: str = ""):
  args = config_lib.parse_arg(arg, model="BiT-M-R50x1", dtype="bfloat16", dataset="imagenet21k")
  config = config_lib.base()
  config.model = args["model"]
  config.model_dtype = args["dtype"]
  config.dataset = args["dataset"]
  config.num_classes = 21_843
  config.loss = "sigmoid_xent"
  config.head_bias_init = -10.0
  config.grad_clip_norm = 1.0
  config.data.multilabel = True
  config.data.train_split = f"full[{HELD_OUT}:]"
  config.data.eval_split = f"full[:{HELD_OUT}]"
  upstream.set_recipe(config, IMAGENET21K_IMAGES - HELD_OUT, epochs=90,
                                 decay_epochs=(30, 60, 80))
  # ImageNet-1k's minival, validation, v2 and ReaL, as big_vision's BiT configs evaluate them;
  # a set that is not prepared is named in a warning at the start and skipped.
  config.evals = upstream.IMAGENET_EVALS
  config.evals_label_map = "i21k_to_i1k"  # The 21,843 logits scored on ImageNet-1k's classes.
  return config
