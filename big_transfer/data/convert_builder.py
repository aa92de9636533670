"""The TFDS builder of a converted data set, and the report of what conversion did to its images.

Each example is {"image": the stored bytes (image_repair), "label": its class, "file_name":
"CLASS/FILE"}, keyed by its file name, so TFDS's writer (which orders examples by a hash of their
keys and cuts the shards) writes the same examples into the same files whatever order the units
ran in: converting twice gives identical files. TFDS writes into a temporary folder and renames it
when every split is complete, so an interrupted conversion leaves no half data set, and running
the converter again on a finished one does nothing. The units an interrupted conversion finished
are kept beside the data set and read back by the next run (convert_work). On Apache Beam each
unit (a class of a split) is one element, spread over the workers after a reshuffle.

Reading a converted data set needs none of this code: `tfds.builder(NAME, data_dir=DIR)` reads
its metadata and records as TFDS reads any prepared data set.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import json
import types
from collections.abc import Generator, Iterator

import tensorflow_datasets as tfds

from big_transfer import atomic
from big_transfer.data import convert_sources, convert_work, image_repair

VERSION = "1.0.0"
REPORT = "conversion_report.json"


@dataclasses.dataclass(frozen=True)
class Conversion:
  """Everything a conversion needs, as plain (picklable) data.

  Attributes:
    source: "folder:DIR" or "tar:ARCHIVE", as given.
    class_names: label order.
    absent_classes: classes of the label order the source lacks.
    units: output split -> its units.
    workers: threads that read and check the images of one unit.
    work_dir: where each finished unit is kept until the conversion is done (convert_work).
    beam: whether the splits are built on Apache Beam.
  """
  source: str
  class_names: tuple[str, ...]
  absent_classes: tuple[str, ...]
  units: dict[str, list[convert_sources.Unit]]
  workers: int
  work_dir: str
  beam: bool


def _ordered_map(fn, items, workers: int) -> Iterator:
  """fn(item) for each item, in order, computed by `workers` threads at most 4 * workers ahead
  (images are read one after another from a tar stream; memory stays bounded)."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= 4 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def converted_unit(unit: convert_sources.Unit,
                   workers: int) -> Generator[tuple[str, dict], None, dict]:
  """Yields (key, example) of each stored image of the unit, read from the source and checked by
  `workers` threads; returns the unit's report: {"split", "class", "counts": outcome -> images,
  "dropped": keys of the dropped files}."""
  def repaired(named):
    name, data = named
    return name, *image_repair.repair(data, name)

  counts = collections.Counter()
  dropped = []
  for name, data, outcome in _ordered_map(repaired, convert_sources.files(unit), workers):
    counts[outcome] += 1
    key = f"{unit.class_name}/{name}"
    if data is None:
      dropped.append(key)
      continue
    yield key, {"image": data, "label": unit.label, "file_name": key}
  return {"split": unit.split, "class": unit.class_name, "counts": dict(counts),
          "dropped": sorted(dropped)}


class _ConvertedImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Images of a folder or a tar of tars; its name is the one the conversion was given."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "Converted by python -m big_transfer.data.convert."}

  def __init__(self, *, conversion: Conversion, **kwargs):
    self._conversion = conversion
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self._conversion
    return self.dataset_info_from_configs(
        description=(f"Images of {c.source}, converted by python -m big_transfer.data.convert; "
                     f"{len(c.class_names)} classes."),
        features=tfds.features.FeaturesDict({
            # JPEGs and PNGs as their files were (image_repair); TFDS and the pipeline decode
            # either.
            "image": tfds.features.Image(),
            "label": tfds.features.ClassLabel(names=c.class_names),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the source is on disk (or gs://).
    return {split: self._generate_examples(units)
            for split, units in self._conversion.units.items()}

  def _generate_examples(self, units):
    c = self._conversion
    examples = functools.partial(convert_work.unit_examples, c.work_dir,
                                 convert_unit=functools.partial(converted_unit, workers=c.workers))
    if c.beam:
      beam = tfds.core.lazy_imports.apache_beam
      return beam.Create(units) | beam.Reshuffle() | beam.FlatMap(examples)
    return (example for unit in units for example in examples(unit))


def builder(name: str, data_dir: str, conversion: Conversion,
            file_format: str) -> tfds.core.GeneratorBasedBuilder:
  """The builder that writes the data set `name` into data_dir/name/VERSION."""
  # TFDS takes a builder's name from its class; this class is never registered, so `dataset=NAME`
  # reads the prepared files, not this code.
  cls = types.new_class(name, (_ConvertedImages,), {"skip_registration": True},
                        lambda namespace: namespace.update(name=name, __module__=__name__))
  return cls(data_dir=data_dir, conversion=conversion, file_format=file_format)


def finished_report(name: str, data_dir: str) -> dict | None:
  """The conversion report of the data set `name` in data_dir if a conversion finished it, else
  None (also when TFDS completed the data set but the conversion ended before its report)."""
  try:
    found = tfds.builder(f"{name}:{VERSION}", data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    return None
  report = found.data_path / REPORT
  return json.loads(report.read_text()) if found.is_prepared() and report.exists() else None


def write_report(builder_: tfds.core.DatasetBuilder, conversion: Conversion) -> dict:
  """Sums the units' reports into data_dir/NAME/VERSION/conversion_report.json (and removes the
  work dir); returns the report. Called once the data set is prepared."""
  totals, per_split, dropped = collections.Counter(), {}, []
  for split, units in conversion.units.items():
    counts = collections.Counter()
    for unit in units:
      unit_report = convert_work.unit_report(conversion.work_dir, unit)
      counts.update(unit_report["counts"])
      dropped += [f"{split}/{key}" for key in unit_report["dropped"]]
    per_split[split] = {outcome: counts[outcome] for outcome in image_repair.OUTCOMES}
    totals.update(counts)
  report = {
      "source": conversion.source,
      "examples": {split: builder_.info.splits[split].num_examples for split in conversion.units},
      "images": {outcome: totals[outcome] for outcome in image_repair.OUTCOMES},
      "images_per_split": per_split,
      "dropped_files": sorted(dropped),
      "classes": len(conversion.class_names),
      "absent_classes": list(conversion.absent_classes),
  }
  atomic.write_json(builder_.data_path / REPORT, report)
  convert_work.clear(conversion.work_dir)
  return report
