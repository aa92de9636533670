"""A path whose scheme TensorFlow's file systems lack is refused where it enters, naming its flag.

(The programs' `error:` line for it: test_bad_input.py, for --workdir and the sweep's --workdir.)
"""

import pytest
import tensorflow as tf

from big_transfer import data, errors, evaluate, export
from big_transfer.data import convert
from big_transfer.recipes import schema


def _refusal(flag_value: str, scheme: str) -> str:
  supported = sorted(s for s in tf.io.gfile.get_registered_schemes() if s)
  assert scheme not in supported
  return (f"{flag_value}: TensorFlow's file systems have no {scheme}:// scheme; use a local path "
          f"or one of {', '.join(s + '://' for s in supported)}.")


def _config(**overrides):
  config = schema.base()
  config.update_from_flattened_dict(overrides)
  return config


@pytest.mark.parametrize("enter, flag_value, scheme", [
    (lambda: schema.check(_config(init="s3://bucket/BiT-M-R50x1.npz")),
     "--config.init=s3://bucket/BiT-M-R50x1.npz", "s3"),
    (lambda: schema.check(_config(**{"distill.teacher": "/tmp/t1.npz; az://c/t2.npz"})),
     "--config.distill.teacher=/tmp/t1.npz; az://c/t2.npz", "az"),
    (lambda: data.InputConfig(data_dir="hdfs://nn/tensorflow_datasets"),
     "--config.data.data_dir=hdfs://nn/tensorflow_datasets", "hdfs"),
    (lambda: data.InputConfig(dataset="folder:s3://bucket/flowers"),
     "--config.dataset=folder:s3://bucket/flowers", "s3"),
    (lambda: evaluate.run("s3://bucket/run", ["imagenet2012"], "/tmp/out", evaluate.defaults()),
     "--init=s3://bucket/run", "s3"),
    (lambda: evaluate.run("/tmp/run", ["imagenet2012"], "az://c/out", evaluate.defaults()),
     "--workdir=az://c/out", "az"),
    (lambda: export.export("s3://bucket/run", "/tmp/model.npz"), "--workdir=s3://bucket/run",
     "s3"),
    (lambda: convert.convert("folder:/tmp/images", "my_images", "s3://bucket/tfds"),
     "--data_dir=s3://bucket/tfds", "s3"),
    (lambda: convert.convert("tar:az://c/fall11_whole.tar", "imagenet21k", "/tmp/tfds"),
     "--source=tar:az://c/fall11_whole.tar", "az"),
], ids=["init", "teacher", "data_dir", "folder", "evaluate-init", "evaluate-workdir",
        "export-workdir", "convert-data_dir", "convert-source"])
def test_a_path_of_an_unknown_scheme_is_refused_naming_its_flag(enter, flag_value, scheme):
  with pytest.raises(errors.ConfigError) as refused:
    enter()
  assert str(refused.value) == _refusal(flag_value, scheme)


def test_local_and_gs_paths_pass():
  schema.check(_config(init="gs://bucket/BiT-M-R50x1.npz",
                       **{"distill.teacher": "/tmp/t1.npz;gs://bucket/t2.npz"}))
  assert data.InputConfig(data_dir="gs://bucket/tfds", dataset="folder:/data/flowers").is_folder
