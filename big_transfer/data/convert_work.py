"""What a conversion keeps beside its data set until it is done, so that a rerun resumes it.

TFDS's writer orders a split's examples by a hash of their keys and cuts the shards only once it
has seen every example of the split, so no output shard exists before the split's last image is
read; TFDS also writes into a temporary folder that it removes on failure. What a conversion can
keep is therefore its units (one class of one split): each unit's examples, once read and
checked, are spooled into `WORK_DIR/SPLIT-LABEL.tfrecord`, and a record of the unit (its image
outcomes, its example count and the SHA-256 of the spool) is written after the spool is closed and
renamed into place. A rerun reads a unit whose spool matches its record from the spool instead of
the source; a unit without a record, or whose spool does not match, is converted again, so a
partly written unit is never kept. The shards are written by TFDS from the same examples either
way, so a resumed conversion writes the same files as an uninterrupted one, with any --shards
and --format: nothing kept depends on them.

The work dir also holds the arguments that decide the examples (source, split percentages, label
order) and the units they made, and the class tars of a compressed archive (convert_sources); a
rerun with other arguments, or whose source gives other units, is refused, naming what differs,
instead of mixing two conversions.
"""

import hashlib
import json
from collections.abc import Callable, Generator, Iterator

import tensorflow as tf
from absl import logging
from etils import epath

from big_transfer import atomic, errors
from big_transfer.data import convert_sources

ARGUMENTS, UNITS = "arguments.json", "units.json"


def work_dir(data_dir: str, name: str, version: str) -> str:
  # Beside the data set, not inside its folder, where TFDS would take it for a config.
  return f"{data_dir.rstrip('/')}/.{name}-{version}.converting"


def unpack_dir(work: str) -> str:
  """Where the class tars of a compressed archive are unpacked (convert_sources.plan)."""
  return f"{work}/archive"


def _unit_paths(work: str, unit: convert_sources.Unit) -> tuple[epath.Path, epath.Path]:
  stem = epath.Path(work) / f"{unit.split}-{unit.label:06d}"
  return stem.with_suffix(".tfrecord"), stem.with_suffix(".json")


def _hash_record(sha, record: bytes) -> None:
  # Each record prefixed by its length, so that no two sequences of records hash alike.
  sha.update(len(record).to_bytes(8, "little"))
  sha.update(record)


def _records_digest(records) -> str:
  """SHA-256 of a spool's records: computed as it is written, and again when it is kept."""
  sha = hashlib.sha256()
  for record in records:
    _hash_record(sha, record)
  return sha.hexdigest()


def _read_spool(spool: epath.Path) -> Iterator[bytes]:
  return tf.data.TFRecordDataset(str(spool)).as_numpy_iterator()


def _holds_work(work: str) -> bool:
  """Whether the work dir holds anything a rerun could use: a unit or an unpacked class tar."""
  return any(p.name not in (ARGUMENTS, UNITS) for p in epath.Path(work).iterdir())


def start(work: str, arguments: dict) -> None:
  """Opens the work dir of a conversion: records the arguments that decide its examples, or checks
  them against those of the interrupted conversion found there (one that kept no work yet is
  simply replaced).

  Args:
    work: the work dir (`work_dir`).
    arguments: e.g. {"--source": ..., "--split_percent": ..., "--classes": ...}.
  Raises:
    ConfigError: the work dir holds work of an interrupted conversion with other arguments.
  """
  path = epath.Path(work) / ARGUMENTS
  kept = json.loads(path.read_text()) if path.exists() else None
  if kept == arguments:
    return
  if kept is not None and _holds_work(work):
    changed = ", ".join(f"{flag}={kept.get(flag)!r} (now {value!r})"
                        for flag, value in arguments.items() if kept.get(flag) != value)
    raise errors.ConfigError(f"{work} holds an interrupted conversion with {changed}; rerun it "
                             "with those arguments to resume it, or remove that folder to start "
                             "over.")
  clear(work)
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic.write_json(path, arguments)


def resume(work: str, units: dict[str, list[convert_sources.Unit]]) -> int:
  """Records the units of a conversion that `start` opened, or checks them against those of the
  interrupted conversion; returns how many units that one finished (as recorded: each spool is
  checked when it is read).

  Raises:
    ConfigError: the same arguments gave other units (the source changed).
  """
  plan = {split: [repr(unit) for unit in split_units] for split, split_units in units.items()}
  path = epath.Path(work) / UNITS
  if not path.exists():
    atomic.write_json(path, plan)
    return 0
  if json.loads(path.read_text()) != plan:
    raise errors.ConfigError(f"{work} holds an interrupted conversion with the same arguments, "
                             "but the source's classes or archive layout have changed since; "
                             "remove that folder to start over.")
  return sum(_unit_paths(work, unit)[1].exists()
             for split_units in units.values() for unit in split_units)


def _kept(work: str, unit: convert_sources.Unit) -> bool:
  """Whether the unit's spool is complete: its record is there and matches the spool's records."""
  spool, record = _unit_paths(work, unit)
  if not record.exists():
    return False
  try:
    if _records_digest(_read_spool(spool)) == json.loads(record.read_text())["sha256"]:
      return True
  except (tf.errors.NotFoundError, tf.errors.DataLossError):  # Removed, or cut short.
    pass
  logging.warning("The spool %s does not match its record; converting %s again.", spool,
                  unit.class_name)
  return False


def _spooled(spool: epath.Path, label: int) -> Iterator[tuple[str, dict]]:
  for serialized in _read_spool(spool):
    feature = tf.train.Example.FromString(serialized).features.feature
    key = feature["file_name"].bytes_list.value[0].decode("utf-8")
    yield key, {"image": feature["image"].bytes_list.value[0], "label": label, "file_name": key}


def _spool_record(key: str, image: bytes) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      "file_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode("utf-8")])),
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
  })).SerializeToString()


def unit_examples(work: str, unit: convert_sources.Unit,
                  convert_unit: Callable[[convert_sources.Unit],
                                         Generator[tuple[str, dict], None, dict]]
                  ) -> Iterator[tuple[str, dict]]:
  """(key, example) of each stored image of the unit: from its spool when a conversion before this
  one finished it, else from `convert_unit(unit)`, which yields them and returns the unit's
  report (a JSON-able dict), while spooling them; the unit's record is written once its spool is
  complete (again, identically, if a Beam worker retries the unit)."""
  spool, record = _unit_paths(work, unit)
  if _kept(work, unit):
    yield from _spooled(spool, unit.label)
    return
  sha, count = hashlib.sha256(), 0
  with atomic.staged(spool) as staging, tf.io.TFRecordWriter(str(staging)) as writer:
    examples = convert_unit(unit)
    while True:
      try:
        key, example = next(examples)
      except StopIteration as done:
        report = done.value
        break
      serialized = _spool_record(key, example["image"])
      writer.write(serialized)
      _hash_record(sha, serialized)
      count += 1
      yield key, example
  atomic.write_json(record, {**report, "examples": count, "sha256": sha.hexdigest()})


def unit_report(work: str, unit: convert_sources.Unit) -> dict:
  """The record of a finished unit: its report, example count and spool digest."""
  return json.loads(_unit_paths(work, unit)[1].read_text())


def clear_if_unused(work: str) -> None:
  """Removes the work dir that `start` opened if it holds no work since."""
  if not _holds_work(work):
    clear(work)


def clear(work: str) -> None:
  """Removes the work dir of a conversion, once its data set is complete."""
  epath.Path(work).rmtree(missing_ok=True)
