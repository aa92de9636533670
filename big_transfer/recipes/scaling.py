"""How recipes tie their numbers to `config.batch_size`, so `--config.batch_size=N` keeps the rate
per example and the epochs of the recipe."""

import ml_collections


def scaled_by_batch(config: ml_collections.ConfigDict, value: float,
                    at_batch: int) -> ml_collections.FieldReference:
  """`value * batch_size / at_batch`, following later changes of `config.batch_size`.

  The linear scaling rule: e.g. `scaled_by_batch(config, 0.03, 256)` is BiT's upstream rate.
  """
  return config.get_ref("batch_size").to_float() * (value / at_batch)


def steps_for_examples(config: ml_collections.ConfigDict,
                       examples: int) -> ml_collections.FieldReference:
  """`round(examples / batch_size)` steps, following later changes of `config.batch_size`."""
  batch = config.get_ref("batch_size")
  return (batch + 2 * examples) // (batch * 2)  # Rounds half up, in integers.
