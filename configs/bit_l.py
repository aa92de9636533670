"""BiT-L: upstream pre-training on a JFT-300M-like data set (~300M noisily labelled images).

    python -m big_transfer.main \
        --config=configs/bit_l.py:model=BiT-L-R152x4,dataset=my_jft,train_examples=300000000 \
        --workdir=gs://BUCKET/bit_l --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Multi-label data: sigmoid cross-entropy on multi-hot targets (a "labels" sequence feature),
head bias starting at -10 and gradients clipped at norm 1 (see configs/bit_m.py). 40 epochs, lr
x0.1 at epochs 10, 23, 30 and 37. Arguments: model, dtype, dataset (TFDS name), train_examples,
num_classes, train_split, eval_split.
"""

from big_transfer.recipes import schema as config_lib
from big_transfer.recipes import upstream


def get_config(arg: str = ""):
  args = config_lib.parse_arg(arg, model="BiT-L-R50x1", dtype="bfloat16", dataset="jft300m",
                              train_examples=300_000_000, num_classes=18_291,
                              train_split="train", eval_split="validation")
  config = config_lib.base()
  config.model = args["model"]
  config.model_dtype = args["dtype"]
  config.dataset = args["dataset"]
  config.num_classes = args["num_classes"]
  config.loss = "sigmoid_xent"
  config.head_bias_init = -10.0
  config.grad_clip_norm = 1.0
  config.data.multilabel = True
  config.data.train_split = args["train_split"]
  config.data.eval_split = args["eval_split"]
  upstream.set_recipe(config, args["train_examples"], epochs=40,
                                 decay_epochs=(10, 23, 30, 37))
  return config
