"""Prepared-looking TFDS data sets without records, for `tfds.testing.mock_data(USE_FILES)`.

mock_data with MockPolicy.USE_FILES reads the metadata (splits, features) a test writes into its
data_dir, and serves random examples of the real feature specs instead of records.
"""

import tensorflow_datasets as tfds


def write_metadata(data_dir, name: str, splits: dict[str, int]) -> None:
  """Writes the metadata of a prepared `name` whose splits have the given sizes, no records."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=builder.name,
                                           split="train", filetype_suffix="tfrecord")
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0,
                          filename_template=template.replace(split=split))
      for split, n in splits.items()]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)
