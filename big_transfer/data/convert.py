"""Converts image folders and ImageNet-21k archives into a sharded TFDS data set, once.

    python -m big_transfer.data.convert --source=folder:/data/my_images --name=my_images \
        --data_dir=gs://BUCKET/tensorflow_datasets --split_percent=train=99,validation=1
    python -m big_transfer.data.convert --source=tar:/data/fall11_whole.tar --name=imagenet21k \
        --data_dir=gs://BUCKET/tensorflow_datasets --classes=imagenet21k
    python -m big_transfer.data.convert --source=tar:/data/winter21_whole.tar.gz --name=winter21 \
        --data_dir=gs://BUCKET/tensorflow_datasets

Then train with `dataset=NAME` and `data.data_dir=DIR` (docs/data.md). Large conversions run on
Apache Beam through TFDS (`--beam_runner=DataflowRunner --beam_options="--project=... ..."`,
or Flink, Spark, or the DirectRunner on one machine). Running it again on a finished data set
does nothing; on an interrupted one, it keeps the classes that one finished and converts the rest
(convert_work).
"""

import re
import shlex
import tempfile

import tensorflow_datasets as tfds
from absl import flags, logging

from big_transfer import atomic, command_line, errors
from big_transfer.data import class_orders, convert_builder, convert_sources, convert_work

FORMATS = ("tfrecord", "array_record")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_name(name: str) -> None:
  if not _NAME.match(name or ""):
    raise errors.ConfigError(f"--name={name!r} must be a TFDS data set name: lower-case letters, "
                             "digits and underscores, starting with a letter (e.g. my_images).")
  if name in tfds.list_builders(with_community_datasets=False):
    raise errors.ConfigError(f"--name={name!r} is a TFDS data set of its own, whose code TFDS "
                             "would use to read it; choose another name.")


def _download_config(shards: int | None, beam_runner: str | None,
                     beam_options: str) -> tfds.download.DownloadConfig:
  options = None
  if beam_options:
    options = tfds.core.lazy_imports.apache_beam.options.pipeline_options.PipelineOptions(
        shlex.split(beam_options))
  return tfds.download.DownloadConfig(num_shards=shards, beam_runner=beam_runner,
                                      beam_options=options, try_download_gcs=False)


def convert(source: str, name: str, data_dir: str, *, split_percent: str = "",
            classes: str = class_orders.SORTED, shards: int | None = None, workers: int = 8,
            file_format: str = "tfrecord", beam_runner: str | None = None,
            beam_options: str = "") -> dict:
  """Writes the TFDS data set `name` (version convert_builder.VERSION) into data_dir, unless it is
  already there; returns its conversion report (convert_builder.write_report).

  Args:
    source: "folder:DIR" (one folder per class, or split folders of class folders) or
      "tar:ARCHIVE" (a tar of tars, one per class), local or gs://.
    split_percent: "train=99,validation=1": split a source without splits by name hashes;
      "" keeps the source's own splits ("full" for a tar of tars).
    classes: label order: "sorted", "imagenet21k" (the published 21,843-way heads) or a file.
    shards: files per split; None lets TFDS choose (64 MiB to 1 GiB each).
    workers: threads that read and check images (per Beam worker, on Beam).
    file_format: "tfrecord" (read sequentially, file by file) or "array_record" (read by random
      access: training reads each host's share in a new permutation per epoch; grain and
      TFDS's `as_data_source` read it too).
    beam_runner: a Beam runner name (e.g. "DirectRunner", "DataflowRunner"); None: no Beam.
    beam_options: Beam pipeline flags, as on a command line.
  """
  _check_name(name)
  atomic.check_scheme(data_dir, "--data_dir")
  atomic.check_scheme(source.partition(":")[2], "--source", source)
  if file_format not in FORMATS:
    raise errors.ConfigError(f"--format={file_format!r} must be one of {', '.join(FORMATS)}.")
  if shards is not None and shards < 1:
    raise errors.ConfigError(f"--shards must be >= 1, got {shards}.")
  if workers < 1:
    raise errors.ConfigError(f"--workers must be >= 1, got {workers}.")
  percents = convert_sources.parse_split_percent(split_percent) if split_percent else None
  work_dir = convert_work.work_dir(data_dir, name, convert_builder.VERSION)
  # --shards and --format are not among them: the units kept do not depend on them.
  arguments = {"--source": source, "--split_percent": split_percent, "--classes": classes}
  finished = convert_builder.finished_report(name, data_dir)
  if finished:
    logging.info("%s is converted already in %s; nothing to do.", name, data_dir)
    return finished
  convert_work.start(work_dir, arguments)
  try:
    class_names, absent, units = convert_sources.plan(
        source, percents, lambda present: class_orders.label_order(present, classes),
        unpack_dir=convert_work.unpack_dir(work_dir))
  except errors.UserError:
    convert_work.clear_if_unused(work_dir)  # Nothing to resume: a bad source is not kept.
    raise
  conversion = convert_builder.Conversion(
      source=source, class_names=class_names, absent_classes=absent, units=units,
      workers=workers, work_dir=work_dir, beam=bool(beam_runner or beam_options))
  builder = convert_builder.builder(name, data_dir, conversion, file_format)
  kept = convert_work.resume(work_dir, units)
  if kept:
    logging.info("Resuming the conversion kept in %s: %d of %d units (a class of a split each) "
                 "are converted already; converting the rest.", work_dir, kept,
                 sum(len(split_units) for split_units in units.values()))
  # Nothing is downloaded, but TFDS makes a downloads folder; keep it out of data_dir. On a data
  # set TFDS finished before the last run could write its report, TFDS does nothing.
  with tempfile.TemporaryDirectory() as downloads:
    builder.download_and_prepare(
        download_dir=downloads, download_config=_download_config(shards, beam_runner, beam_options))
  return convert_builder.write_report(builder, conversion)


def _summary(report: dict, name: str, data_dir: str) -> str:
  images = report["images"]
  converted = {k: v for k, v in images.items() if k.startswith("converted_") and v}
  lines = [f"{name}: {sum(report['examples'].values())} examples "
           f"({', '.join(f'{s} {n}' for s, n in report['examples'].items())}), "
           f"{report['classes']} classes, in {data_dir}.",
           f"Images kept as they were: {images['kept']}; re-encoded: "
           f"{sum(converted.values())} {converted or ''}; dropped unreadable: "
           f"{images['dropped_unreadable']}."]
  if report["absent_classes"]:
    absent = report["absent_classes"]
    lines.append(f"{len(absent)} classes of the label order have no images: "
                 f"{', '.join(absent[:20])}{' ...' if len(absent) > 20 else ''}")
  lines.append(f"Report: {data_dir}/{name}/{convert_builder.VERSION}/{convert_builder.REPORT}. "
               f"Train with --config.dataset={name} --config.data.data_dir={data_dir}.")
  return "\n".join(lines)


def _define_flags() -> None:
  # Defined only when run as a program, so importing the library registers no flags.
  flags.DEFINE_string("source", None, "folder:DIR or tar:ARCHIVE (a tar of tars, one per class).")
  flags.DEFINE_string("name", None, "Name of the TFDS data set to write (dataset=NAME).")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir to write into, local or gs://.")
  flags.DEFINE_string("split_percent", "", "e.g. train=99,validation=1: split a source without "
                      "splits; default: its own splits (train, or full for a tar).")
  flags.DEFINE_string("classes", class_orders.SORTED, "Label order: sorted (the source's own "
                      "classes), imagenet21k (the published 21,843-way heads) or a file.")
  flags.DEFINE_integer("shards", None, "Files per split; default: TFDS's choice.")
  flags.DEFINE_integer("workers", 8, "Threads that read and check images (per Beam worker).")
  flags.DEFINE_enum("format", "tfrecord", FORMATS, "Record file format; training reads both "
                    "(array_record by random access, also for grain).")
  flags.DEFINE_string("beam_runner", None, "Apache Beam runner: DirectRunner, DataflowRunner, "
                      "FlinkRunner, SparkRunner, ...; default: no Beam.")
  flags.DEFINE_string("beam_options", "", "Beam pipeline flags, e.g. \"--project=P "
                      "--region=R --temp_location=gs://B/tmp\".")
  flags.mark_flags_as_required(["source", "name", "data_dir"])


def main(argv) -> None:
  del argv  # Flags only.
  args = flags.FLAGS
  report = convert(args.source, args.name, args.data_dir, split_percent=args.split_percent,
                   classes=args.classes, shards=args.shards, workers=args.workers,
                   file_format=args.format, beam_runner=args.beam_runner,
                   beam_options=args.beam_options)
  print(_summary(report, args.name, args.data_dir))


if __name__ == "__main__":
  _define_flags()
  command_line.run(main)
