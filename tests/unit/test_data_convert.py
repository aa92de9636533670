"""Converting image folders and tars of tars to TFDS (`big_transfer.data.convert`): identical
files twice over, repaired and dropped images counted, the published ImageNet-21k order, Beam's
DirectRunner, resuming an interrupted conversion to the same files, compressed archives, and each
host reading only its share of the converted files."""

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import math
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source
from PIL import Image

from big_transfer import data, errors
from big_transfer.data import (class_lists, convert, convert_builder, convert_work, folder_source,
                               image_repair, tfds_source)

CLASSES = ("ant", "bee", "cat")
# Two synsets of the published heads: the first, and ImageNet-1k's tench.
WNIDS = ("n00004475", "n01440764")


def _pixels(seed, size=(24, 32)):
  # Smooth pixels: JPEG keeps them close, so a re-encoded image can be compared with its source.
  y, x = np.mgrid[:size[0], :size[1]]
  base = np.random.default_rng(seed).uniform(0, 255, 3)
  return np.clip(base + 2.0 * y[..., None] + x[..., None], 0, 255).astype(np.uint8)


def _jpeg(pixels):
  return tf.io.encode_jpeg(pixels, quality=95).numpy()


def _png(pixels):
  return tf.io.encode_png(pixels).numpy()


def _cmyk_jpeg(pixels):
  out = io.BytesIO()
  Image.fromarray(pixels).convert("CMYK").save(out, "JPEG", quality=95)
  return out.getvalue()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  """ant/, bee/, cat/ with 8 images each (JPEG and PNG), plus in ant/ a CMYK JPEG, in bee/ a PNG
  named .JPEG, in cat/ a corrupt .jpg, and a text file."""
  folder = tmp_path_factory.mktemp("images")
  for label, name in enumerate(CLASSES):
    (folder / name).mkdir()
    for i in range(8):
      pixels = _pixels(10 * label + i)
      if i % 2:
        (folder / name / f"{i}.png").write_bytes(_png(pixels))
      else:
        (folder / name / f"{i}.jpg").write_bytes(_jpeg(pixels))
  (folder / "ant" / "cmyk.jpg").write_bytes(_cmyk_jpeg(_pixels(100)))
  (folder / "bee" / "png_inside.JPEG").write_bytes(_png(_pixels(101)))
  (folder / "cat" / "corrupt.jpg").write_bytes(_jpeg(_pixels(102))[:60])
  (folder / "cat" / "notes.txt").write_text("not an image")
  return folder


def _records(data_dir, name):
  """{file name: bytes} of every record file of the converted data set."""
  version_dir = tfds.builder(name, data_dir=str(data_dir)).data_path
  return {p.name: p.read_bytes() for p in version_dir.iterdir() if "tfrecord" in p.name}


def _examples(data_dir, name, split):
  """{file_name: (label, image bytes)} of a converted split, read through TFDS."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return {ex["file_name"].decode(): (int(ex["label"]), ex["image"])
          for ex in ds.as_numpy_iterator()}


@pytest.fixture(scope="module")
def converted(image_folder, tmp_path_factory):
  """The folder converted with train=75,test=25 into 4 shards per split; (data_dir, report)."""
  data_dir = tmp_path_factory.mktemp("tfds")
  report = convert.convert(f"folder:{image_folder}", "my_images", str(data_dir),
                           split_percent="train=75,test=25", shards=4, workers=2)
  return data_dir, report


def test_converting_twice_writes_identical_files(image_folder, converted, tmp_path):
  data_dir, _ = converted
  convert.convert(f"folder:{image_folder}", "my_images", str(tmp_path),
                  split_percent="train=75,test=25", shards=4, workers=3)
  first, second = _records(data_dir, "my_images"), _records(tmp_path, "my_images")
  assert len(first) == 8  # 4 shards of each split.
  assert first == second


def test_repaired_and_dropped_images_are_counted_and_named(converted):
  _, report = converted
  images = report["images"]
  assert images == {"kept": 24, "converted_cmyk": 1, "converted_format": 1,
                    "converted_undecodable": 0, "dropped_unreadable": 1}
  assert [f.split("/", 1)[1] for f in report["dropped_files"]] == ["cat/corrupt.jpg"]
  assert sum(report["examples"].values()) == 26


def test_every_split_image_lands_once_with_its_class_and_its_bytes(image_folder, converted):
  data_dir, _ = converted
  train, test = (_examples(data_dir, "my_images", split) for split in ("train", "test"))
  assert not set(train) & set(test)
  everything = {**train, **test}
  expected = {f"{p.parent.name}/{p.name}" for p in image_folder.glob("*/*")
              if p.suffix != ".txt" and p.name != "corrupt.jpg"}
  assert set(everything) == expected
  assert 0.5 < len(train) / len(everything) < 0.95  # 75% by name hashes: roughly.
  for key, (label, image) in everything.items():
    assert CLASSES[label] == key.split("/")[0]
    if key not in ("ant/cmyk.jpg", "bee/png_inside.JPEG"):
      assert image == (image_folder / key).read_bytes()  # Kept byte for byte.
  assert tfds.builder("my_images", data_dir=str(data_dir)).info.features["label"].names == list(
      CLASSES)


def test_cmyk_and_misnamed_images_become_rgb_jpegs_of_the_same_picture(converted):
  data_dir, _ = converted
  everything = {**_examples(data_dir, "my_images", "train"),
                **_examples(data_dir, "my_images", "test")}
  for key, seed in (("ant/cmyk.jpg", 100), ("bee/png_inside.JPEG", 101)):
    stored = everything[key][1]
    assert image_repair.content_format(stored) == "jpeg"
    with Image.open(io.BytesIO(stored)) as image:
      assert image.mode == "RGB"
      error = np.abs(np.asarray(image, np.float32) - _pixels(seed)).mean()
    assert error < 4.0, (key, error)


def test_a_finished_data_set_is_left_as_it_is(image_folder, converted):
  data_dir, report = converted
  before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}
  again = convert.convert(f"folder:{image_folder}", "my_images", str(data_dir),
                          split_percent="train=75,test=25", shards=4)
  assert again == report
  assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()} == before


_REPAIR = image_repair.repair


def _count_repairs(monkeypatch, interrupt_at=None):
  """Makes image_repair.repair note the names it is called with (in the returned list) and raise
  KeyboardInterrupt at its call number `interrupt_at`."""
  calls = []

  def counted(data_, name):
    calls.append(name)
    if len(calls) == interrupt_at:
      raise KeyboardInterrupt
    return _REPAIR(data_, name)

  monkeypatch.setattr(image_repair, "repair", counted)
  return calls


def test_an_interrupted_conversion_is_invisible_then_resumes_to_the_same_files(
    image_folder, converted, tmp_path, monkeypatch, caplog):
  source, work_dir = f"folder:{image_folder}", tmp_path / ".my_images-1.0.0.converting"
  _count_repairs(monkeypatch, interrupt_at=12)  # In the second class of the train split.
  with pytest.raises(KeyboardInterrupt):
    # Other --shards than the rerun's: the classes kept do not depend on them.
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                    shards=2, workers=1)
  with pytest.raises(tfds.core.DatasetNotFoundError):
    tfds.builder("my_images", data_dir=str(tmp_path))
  # No records of the data set: only what the work dir keeps.
  assert not [p for p in tmp_path.rglob("*") if p.is_file() and work_dir not in p.parents]
  kept = sorted(p.name for p in work_dir.glob("*.json")
                if p.name not in (convert_work.ARGUMENTS, convert_work.UNITS))
  assert kept == ["train-000000.json"]  # The first class; not the second, half read.
  first_class = sum(json.loads((work_dir / kept[0]).read_text())["counts"].values())

  calls = _count_repairs(monkeypatch)
  with caplog.at_level(logging.INFO):
    report = convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                             shards=4, workers=2)
  assert "1 of 6 units (a class of a split each) are converted already" in caplog.text
  assert len(calls) == 27 - first_class  # Every image file but those of the kept class.
  assert _records(tmp_path, "my_images") == _records(converted[0], "my_images")
  assert report == converted[1]
  assert not work_dir.exists()


def test_a_kept_class_whose_spool_was_cut_short_is_converted_again(image_folder, converted,
                                                                    tmp_path, monkeypatch, caplog):
  source, work_dir = f"folder:{image_folder}", tmp_path / ".my_images-1.0.0.converting"
  _count_repairs(monkeypatch, interrupt_at=12)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                    workers=1)
  spool = work_dir / "train-000000.tfrecord"
  spool.write_bytes(spool.read_bytes()[:-10])
  calls = _count_repairs(monkeypatch)
  with caplog.at_level(logging.WARNING):
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                    shards=4)
  assert f"The spool {spool} does not match its record; converting ant again" in caplog.text
  assert len(calls) == 27  # Every image file, those of the cut class too.
  assert _records(tmp_path, "my_images") == _records(converted[0], "my_images")


def test_a_conversion_that_ended_before_its_report_gets_it_from_a_rerun(image_folder, converted,
                                                                      tmp_path, monkeypatch):
  source, write_report = f"folder:{image_folder}", convert_builder.write_report

  def ended(*args):
    raise KeyboardInterrupt

  monkeypatch.setattr(convert_builder, "write_report", ended)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                    shards=4)
  assert tfds.builder("my_images", data_dir=str(tmp_path)).is_prepared()
  monkeypatch.setattr(convert_builder, "write_report", write_report)
  calls = _count_repairs(monkeypatch)
  report = convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                           shards=4)
  assert report == converted[1] and not calls  # From the kept units; no image is read again.
  assert _records(tmp_path, "my_images") == _records(converted[0], "my_images")


def test_a_rerun_with_other_arguments_starts_over_if_nothing_was_kept_else_is_refused(
    image_folder, tmp_path, monkeypatch):
  source = f"folder:{image_folder}"
  _count_repairs(monkeypatch, interrupt_at=1)  # Before any class is kept.
  with pytest.raises(KeyboardInterrupt):
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=50,test=50")
  _count_repairs(monkeypatch, interrupt_at=12)  # Once the first class is kept.
  with pytest.raises(KeyboardInterrupt):
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=75,test=25",
                    workers=1)
  with pytest.raises(errors.ConfigError, match=r"\.my_images-1\.0\.0\.converting holds an "
                     r"interrupted conversion with --split_percent='train=75,test=25' \(now "
                     r"'train=50,test=50'\); rerun it with those arguments to resume it, or "
                     r"remove that folder to start over"):
    convert.convert(source, "my_images", str(tmp_path), split_percent="train=50,test=50")


def test_the_beam_direct_runner_writes_the_same_examples(image_folder, converted, tmp_path):
  data_dir, report = converted
  beam_report = convert.convert(f"folder:{image_folder}", "my_images", str(tmp_path),
                                split_percent="train=75,test=25", shards=4,
                                beam_runner="DirectRunner")
  assert beam_report == report
  for split in ("train", "test"):
    assert (_examples(tmp_path, "my_images", split)
            == _examples(data_dir, "my_images", split))


def test_split_folders_keep_their_splits(tmp_path):
  for split, count in (("train", 3), ("test", 2)):
    for name in CLASSES[:2]:
      (tmp_path / "src" / split / name).mkdir(parents=True)
      for i in range(count):
        (tmp_path / "src" / split / name / f"{i}.jpg").write_bytes(_jpeg(_pixels(i)))
  report = convert.convert(f"folder:{tmp_path / 'src'}", "two_splits", str(tmp_path / "out"))
  assert report["examples"] == {"train": 6, "test": 4}
  with pytest.raises(errors.ConfigError, match="splits .*'test', 'train'.* of its own"):
    convert.convert(f"folder:{tmp_path / 'src'}", "two_splits", str(tmp_path / "out2"),
                    split_percent="train=90,validation=10")


def _tar_of_tars(path, classes):
  """A tar holding CLASS.tar per class, each with `count` JPEGs CLASS_i.JPEG (ImageNet's names)."""
  with tarfile.open(path, "w") as outer:
    for c, (name, count) in enumerate(classes.items()):
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(count):
          image = _jpeg(_pixels(100 * c + i))
          member = tarfile.TarInfo(f"{name}_{i}.JPEG")
          member.size = len(image)
          inner.addfile(member, io.BytesIO(image))
      member = tarfile.TarInfo(f"{name}.tar")
      member.size = len(inner_bytes.getvalue())
      outer.addfile(member, io.BytesIO(inner_bytes.getvalue()))


def test_a_tar_of_tars_follows_the_published_21843_way_order(tmp_path):
  archive = tmp_path / "fall11_whole.tar"
  _tar_of_tars(archive, {WNIDS[1]: 3, WNIDS[0]: 2})
  report = convert.convert(f"tar:{archive}", "imagenet21k", str(tmp_path / "out"),
                           classes="imagenet21k")
  published = class_lists.imagenet21k_synsets()
  assert len(published) == 21_843 and published[0] == WNIDS[0]
  examples = _examples(tmp_path / "out", "imagenet21k", "full")
  assert len(examples) == 5
  for key, (label, _) in examples.items():
    assert published[label] == key.split("/")[0]
  assert {label for label, _ in examples.values()} == {0, published.index(WNIDS[1])}
  features = tfds.builder("imagenet21k", data_dir=str(tmp_path / "out")).info.features
  assert features["label"].names == list(published)
  assert len(report["absent_classes"]) == 21_843 - 2
  assert set(WNIDS).isdisjoint(report["absent_classes"])


def test_a_tar_of_tars_keeps_its_own_sorted_classes_by_default(tmp_path):
  archive = tmp_path / "winter21.tar"
  _tar_of_tars(archive, {"n99999999": 1, WNIDS[1]: 2})
  convert.convert(f"tar:{archive}", "winter", str(tmp_path / "out"))
  features = tfds.builder("winter", data_dir=str(tmp_path / "out")).info.features
  assert features["label"].names == [WNIDS[1], "n99999999"]
  with pytest.raises(errors.DataError, match="1 classes that --classes=imagenet21k lacks: "
                                             "n99999999"):
    convert.convert(f"tar:{archive}", "winter2", str(tmp_path / "out"), classes="imagenet21k")


def test_a_compressed_tar_of_tars_converts_to_the_same_files_as_the_plain_tar(tmp_path):
  archive = tmp_path / "winter21_whole.tar"
  _tar_of_tars(archive, {WNIDS[1]: 3, WNIDS[0]: 2})
  with gzip.open(tmp_path / "winter21_whole.tar.gz", "wb") as compressed:
    compressed.write(archive.read_bytes())
  plain = convert.convert(f"tar:{archive}", "winter", str(tmp_path / "plain"))
  from_gzip = convert.convert(f"tar:{archive}.gz", "winter", str(tmp_path / "gzip"))
  assert sum(from_gzip["examples"].values()) == 5
  assert {**from_gzip, "source": None} == {**plain, "source": None}
  assert _records(tmp_path / "gzip", "winter") == _records(tmp_path / "plain", "winter")
  assert [p.name for p in (tmp_path / "gzip").iterdir()] == ["winter"]  # The unpacked tars too.


def test_an_interrupted_unpacking_keeps_the_class_tars_it_copied_whole(tmp_path, monkeypatch):
  archive = tmp_path / "winter21_whole.tar"
  _tar_of_tars(archive, {WNIDS[1]: 3, WNIDS[0]: 2})
  with gzip.open(tmp_path / "winter21_whole.tar.gz", "wb") as compressed:
    compressed.write(archive.read_bytes())
  copy = shutil.copyfileobj

  def count_copies(interrupt_at=None):
    copied = []

    def counted(source, target, *args):
      copied.append(source)
      if len(copied) == interrupt_at:  # Half-way through this class tar.
        target.write(source.read(100))
        raise KeyboardInterrupt
      copy(source, target, *args)

    monkeypatch.setattr(shutil, "copyfileobj", counted)
    return copied

  count_copies(interrupt_at=2)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(f"tar:{archive}.gz", "winter", str(tmp_path / "gzip"))
  unpacked = tmp_path / "gzip" / ".winter-1.0.0.converting" / "archive"
  assert [p.name for p in unpacked.iterdir()] == [f"{WNIDS[1]}.tar"]  # Not the half copy.
  copied = count_copies()
  convert.convert(f"tar:{archive}.gz", "winter", str(tmp_path / "gzip"))
  assert len(copied) == 1  # The second class tar only.
  convert.convert(f"tar:{archive}", "winter", str(tmp_path / "plain"))
  assert _records(tmp_path / "gzip", "winter") == _records(tmp_path / "plain", "winter")


def test_an_archive_that_is_no_tar_is_refused_with_what_to_do(tmp_path):
  archive = tmp_path / "images.zip"
  archive.write_bytes(b"PK\x03\x04 not a tar")
  with pytest.raises(errors.DataError, match="is not a tar, nor a tar compressed with gzip, bzip2 "
                                             "or xz.*--source=folder:DIR"):
    convert.convert(f"tar:{archive}", "winter", str(tmp_path / "out"))
  assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "My-Images"}, "--name='My-Images' must be a TFDS data set name"),
    ({"name": "imagenet2012"}, "is a TFDS data set of its own"),
    ({"split_percent": "train=90,test=5"}, "add up to 100 .*95"),
    ({"split_percent": "train:90"}, "NAME=PERCENT"),
    ({"file_format": "parquet"}, "--format='parquet' must be one of tfrecord, array_record"),
    ({"source": "zip:/x.zip"}, "must be folder:DIR or tar:ARCHIVE"),
    ({"classes": "/no/such/list.txt"}, "neither 'sorted', 'imagenet21k' nor a text file"),
])
def test_bad_arguments_name_the_value_and_the_fix(image_folder, tmp_path, kwargs, message):
  args = {"source": f"folder:{image_folder}", "name": "my_images", "data_dir": str(tmp_path),
          **kwargs}
  with pytest.raises(errors.UserError, match=message):
    convert.convert(args.pop("source"), args.pop("name"), args.pop("data_dir"), **args)


def _image_digest(record: bytes) -> str:
  image = tf.io.parse_single_example(record, {"image": tf.io.FixedLenFeature([], tf.string)})
  return hashlib.sha256(image["image"].numpy()).hexdigest()


def _shard_of_each_example(data_dir, name, split, file_format="tfrecord"):
  """{digest of the encoded image: index of the record file holding it}, read file by file."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  paths = sorted(str(p) for p in builder.data_path.iterdir() if f"-{split}.{file_format}" in p.name)
  where = {}
  for index, path in enumerate(paths):
    if file_format == "tfrecord":
      records = tf.data.TFRecordDataset(path).as_numpy_iterator()
    else:
      records = array_record_data_source.ArrayRecordDataSource(path)
    for record in records:
      where[_image_digest(record)] = index
  return where


@pytest.fixture(scope="module")
def converted_array_record(image_folder, tmp_path_factory):
  """The folder of `converted`, converted the same way into array_record files."""
  data_dir = tmp_path_factory.mktemp("tfds_array_record")
  report = convert.convert(f"folder:{image_folder}", "my_images", str(data_dir),
                           split_percent="train=75,test=25", shards=4, file_format="array_record")
  return data_dir, report


def test_array_record_files_hold_the_tfrecord_examples_in_the_same_order(converted,
                                                                         converted_array_record):
  builder = tfds.builder("my_images", data_dir=str(converted_array_record[0]))
  assert builder.info.file_format.value == "array_record"
  assert sum("array_record" in p.name for p in builder.data_path.iterdir()) == 8
  for split in ("train", "test"):
    cfg = data.InputConfig(dataset="my_images", train_split=split, crop=16)
    shares = [tfds_source.TfdsSource(dataclasses.replace(cfg, data_dir=str(data_dir)))
              .train_examples(0, 1).read(None) for data_dir, _ in (converted,
                                                                    converted_array_record)]
    tfrecord, array_record = ([(ex["image"], tuple(ex["label"])) for ex in share.as_numpy_iterator()]
                              for share in shares)
    assert len(tfrecord) == converted[1]["examples"][split]
    assert array_record == tfrecord


def test_array_record_shares_come_in_a_new_permutation_per_seed(converted_array_record):
  cfg = data.InputConfig(dataset="my_images", data_dir=str(converted_array_record[0]), crop=16)
  share = tfds_source.TfdsSource(cfg).train_examples(1, 2)

  def digests(seed):
    return [hashlib.sha256(ex["image"]).hexdigest() for ex in share.read(
        None if seed is None else tf.constant(seed, tf.int64)).as_numpy_iterator()]

  in_key_order, first, again, second = digests(None), digests(7), digests(7), digests(8)
  assert len(in_key_order) == share.num_examples
  assert first == again
  assert first != in_key_order and second != first
  assert sorted(first) == sorted(second) == sorted(in_key_order)


def _converted_as(request, file_format: str):
  """(data_dir, report) of the module's conversion in `file_format`."""
  return request.getfixturevalue({"tfrecord": "converted",
                                  "array_record": "converted_array_record"}[file_format])


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_four_hosts_read_disjoint_covering_shares_from_their_own_files(request, file_format):
  data_dir, report = _converted_as(request, file_format)
  cfg = data.InputConfig(dataset="my_images", data_dir=str(data_dir), train_split="train",
                         crop=16)
  source = tfds_source.TfdsSource(cfg)
  shard = _shard_of_each_example(data_dir, "my_images", "train", file_format)
  num_files, shares = len(set(shard.values())), []
  for host in range(4):
    share = source.train_examples(host, 4)
    digests = [hashlib.sha256(ex["image"]).hexdigest()
               for ex in share.read(None).as_numpy_iterator()]
    assert len(digests) == share.num_examples
    # Contiguous sub-splits: a host opens its own files and at most one beyond its share.
    assert len({shard[d] for d in digests}) <= math.ceil(num_files / 4) + 1
    shares.append(digests)
  everything = [d for share in shares for d in share]
  assert len(everything) == len(set(everything)) == report["examples"]["train"]
  assert set(everything) == set(shard)


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_training_batches_on_the_converted_set_resume_exactly_on_each_of_four_hosts(request,
                                                                                    file_format):
  data_dir, _ = _converted_as(request, file_format)
  cfg = data.InputConfig(dataset="my_images", data_dir=str(data_dir), crop=16, shuffle_buffer=8)
  for host in (0, 3):
    run = data.train_batches(cfg, 8, seed=5, process_index=host, process_count=4)
    straight = [next(run) for _ in range(6)]
    resumed = data.train_batches(cfg, 8, seed=5, start_step=4, process_index=host,
                                 process_count=4)
    for step in (4, 5):
      batch = next(resumed)
      np.testing.assert_array_equal(batch["image"], straight[step]["image"])
      np.testing.assert_array_equal(batch["label"], straight[step]["label"])


def test_a_large_image_folder_warns_with_the_convert_command(tmp_path, monkeypatch, caplog):
  for name in CLASSES:
    (tmp_path / name).mkdir()
    for i in range(2):
      (tmp_path / name / f"{i}.jpg").write_bytes(_jpeg(_pixels(i)))
  monkeypatch.setattr(folder_source, "CONVERT_ABOVE", 5)
  with caplog.at_level(logging.WARNING):
    data.dataset_info(data.InputConfig(dataset=f"folder:{tmp_path}", crop=16))
  warnings = [r.getMessage() for r in caplog.records if "big_transfer.data.convert" in
              r.getMessage()]
  assert len(warnings) == 1
  assert "holds 6 images" in warnings[0]
  assert f"python -m big_transfer.data.convert --source=folder:{tmp_path} --name=NAME" in warnings[0]
