"""Exports a trained checkpoint for use outside big_transfer: npz, TF SavedModel or flax msgpack.

    python -m big_transfer.export --workdir=DIR --output=PATH [--format=npz|savedmodel|params]
        [--step=N] [--overwrite] [--features=stem,C2,C3,C4,C5 [--output_stride=16]]

"npz" is the published BiT layout (timm and the original code load it), "savedmodel" a TF
SavedModel that takes uint8 images of any size and does the eval preprocessing itself (TF
Serving, TF Lite), "params" the flax params tree in msgpack (JAX users). A SavedModel exported
with `--features` also has a `features` signature returning the backbone's feature maps
(docs/features.md). Every export
gets its metadata (model, classes, resolution, preprocessing, training config, step) as JSON:
`PATH.json` beside a file, `PATH/metadata.json` inside a SavedModel directory. The export is
written under a temporary name beside PATH and renamed into place, so a failure never leaves a
half-written output nor destroys an existing one. See docs/export.md.
"""

import functools
import json
import uuid

import flax.serialization
import jax
import tensorflow as tf
from absl import flags, logging
from etils import epath

import big_transfer
from big_transfer import atomic, command_line, errors, models
from big_transfer.data import preprocess
from big_transfer.models import interop
from big_transfer.training.trained import Trained, load_checkpoint, metadata_path

FORMATS = ("npz", "savedmodel", "params")
# timm's names of the published variants, whose models load our npz (docs/export.md).
TIMM_MODELS = {name: f"resnetv2_{depth}x{width}_bit"
               for name, (depth, width) in models.VARIANTS.items()}
# The SavedModel signature that returns feature maps (`--features`).
FEATURES_SIGNATURE = "features"


def metadata(trained: Trained, format: str, features: tuple[str, ...] = (),
             output_stride: int = 32) -> dict:
  """What a user of the export needs to know, JSON-ready."""
  record = trained.record
  depth, width = models.parse_name(record.model)
  name = f"R{depth}x{width}"
  crop = trained.crop
  activation = "sigmoid" if record.loss == "sigmoid_xent" else "softmax"
  if format == "savedmodel":
    inputs = {"signature": "serving_default", "name": "images", "dtype": "uint8",
              "shape": [None, None, None, 3], "preprocessing_included": True}
  else:
    inputs = {"dtype": "float32", "shape": [None, crop, crop, 3],
              "preprocessing_included": False}
  info = {
      "format": format,
      "model": record.model,
      "architecture": name,
      "depth": depth,
      "width": width,
      "blocks": list(models.blocks_for(depth)),
      "timm_model": TIMM_MODELS.get(name),
      "num_classes": record.num_classes,
      "class_names": list(record.class_names) if record.class_names else None,
      "output": {"name": "logits", "dtype": "float32",
                 "shape": [None, record.num_classes],
                 "activation": activation},
      "input": inputs,
      "resolution": [crop, crop],
      "preprocessing": preprocess.eval_description(trained.recipe, crop),
      "dtype": "float32",
      "num_params": int(sum(x.size for x in jax.tree.leaves(trained.params))),
      "dataset": record.dataset,
      "step": trained.step,
      "workdir": trained.workdir,
      "training_config": record.config,
      "big_transfer_version": big_transfer.__version__,
  }
  if features:
    maps = {i.name: i for i in models.feature_info(record.model, output_stride)}
    info["features"] = {
        "signature": FEATURES_SIGNATURE, "output_stride": output_stride,
        "input": {"name": "images", "dtype": "uint8", "shape": [None, None, None, 3],
                  "preprocessing": "scaled to [-1, 1], no resize"},
        "maps": [{"name": name, "stride": maps[name].stride, "channels": maps[name].channels,
                  "dtype": "float32", "layout": "NHWC"} for name in features]}
  return info


def serving_module(trained: Trained, features: tuple[str, ...] = (), output_stride: int = 32):
  """A `tf.Module` whose `serve(images)` maps uint8 (B, H, W, 3) to {"logits": float32 (B, K)}.

  With `features`, its `features(images)` maps uint8 (B, H, W, 3) of any size, only scaled to
  [-1, 1], to those feature maps by name, float32 (B, ceil(H / stride), ceil(W / stride), C),
  at `output_stride`.

  The run's evaluation view (`preprocess.eval_view` of its recipe: the resize, the central crop
  of the upstream recipe, the scaling) runs as TF ops; the network is the JAX model
  lowered with jax2tf's native serialization (StableHLO in an XlaCallModule op) for CPU, CUDA
  and TPU, with a polymorphic batch. Params are TF variables, so a large model's weights go to
  the SavedModel's variables/ rather than into its 2 GB-limited graph.
  """
  from jax.experimental import jax2tf  # Only this format needs jax2tf.

  model, crop = trained.model(), trained.crop
  leaves, treedef = jax.tree.flatten(trained.params)
  variables = [tf.Variable(leaf, trainable=False) for leaf in leaves]
  network = jax2tf.convert(
      lambda params, images: model.apply({"params": params}, images),
      polymorphic_shapes=[None, f"(batch, {crop}, {crop}, 3)"], with_gradient=False,
      native_serialization_platforms=("cpu", "cuda", "tpu"))

  images_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")

  @tf.function(autograph=False, input_signature=[images_spec])
  def serve(images):
    inputs = preprocess.eval_view(images, trained.recipe, crop)
    return {"logits": network(jax.tree.unflatten(treedef, variables), inputs)}

  module = tf.Module()
  module.variables_ = variables  # Tracked, so they are saved with the module.
  module.serve = serve
  if features:
    backbone = models.create(trained.record.model, num_classes=None, features=features,
                             output_stride=output_stride)
    # The classifier's params, head included (the backbone leaves it unused), so both signatures
    # read the same tf.Variables and the SavedModel holds the weights once.
    feature_network = jax2tf.convert(
        lambda params, images: backbone.apply({"params": params}, images),
        polymorphic_shapes=[None, "(batch, height, width, 3)"], with_gradient=False,
        native_serialization_platforms=("cpu", "cuda", "tpu"))

    @tf.function(autograph=False, input_signature=[images_spec])
    def feature_maps(images):
      inputs = preprocess.to_unit_range(tf.cast(images, tf.float32))
      return feature_network(jax.tree.unflatten(treedef, variables), inputs)

    module.features = feature_maps
  return module


def _write_npz(trained: Trained, path: epath.Path) -> None:
  # `path` is a staged name already (`export`): no second temporary name inside it.
  path.write_bytes(interop.bit_npz_bytes(trained.params))


def _write_params(trained: Trained, path: epath.Path) -> None:
  path.write_bytes(flax.serialization.msgpack_serialize(trained.params))


def _write_savedmodel(trained: Trained, path: epath.Path, features: tuple[str, ...] = (),
                      output_stride: int = 32) -> None:
  module = serving_module(trained, features, output_stride)
  signatures = {"serving_default": module.serve}
  if features:
    signatures[FEATURES_SIGNATURE] = module.features
  tf.saved_model.save(module, str(path), signatures=signatures)


_WRITERS = {"npz": _write_npz, "savedmodel": _write_savedmodel, "params": _write_params}


def _check_output(output: epath.Path, format: str, overwrite: bool) -> None:
  atomic.check_scheme(output, "--output")
  # The nearest existing ancestor (none: a gs:// bucket that does not exist, which the write
  # reports); the export creates the missing folders below it.
  nearest = next((p for p in (output.parent, *output.parent.parents) if p.exists()), None)
  if nearest is not None and not nearest.is_dir():
    raise errors.ConfigError(f"--output={output}: {nearest} is a file, not a folder; choose an "
                             "--output inside a folder.")
  targets = [output] if format == "savedmodel" else [output, metadata_path(output, format)]
  existing = [str(t) for t in targets if t.exists()]
  if existing and not overwrite:
    raise errors.ConfigError(f"{' and '.join(existing)} already "
                             f"{'exists' if len(existing) == 1 else 'exist'}; pass --overwrite to "
                             "replace it, or choose another --output.")
  if output.is_dir() and not (output / "saved_model.pb").exists():
    raise errors.ConfigError(f"{output} is a directory but not a SavedModel; refusing to replace "
                             "it even with --overwrite. Choose another --output.")


def _check_writable(folder: epath.Path, probe: epath.Path, output: epath.Path) -> None:
  """Creates `folder` and a file `probe` in it, then removes the probe: a folder that cannot be
  written fails here, in one line, before the export is computed."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:  # A local folder the user may not write (permissions, read-only mount).
    raise errors.ConfigError(f"--output={output}: cannot write in {folder} "
                             f"({e.strerror or e}); choose a folder you can write to.") from None


def _put_in_place(staged: epath.Path, final: epath.Path) -> None:
  """Renames `staged` to `final`; an existing `final` is moved aside first and deleted last."""
  aside = None
  if final.exists():
    aside = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    final.rename(aside)
  try:
    staged.rename(final)
  except BaseException:
    if aside is not None:
      aside.rename(final)
    raise
  if aside is not None:
    aside.rmtree() if aside.is_dir() else aside.unlink()


def export(workdir, output, format: str = "npz", step: int | None = None,
           overwrite: bool = False, features: tuple[str, ...] = (),
           output_stride: int = 32) -> dict:
  """Exports a run's checkpoint to `output` in `format`; returns the metadata written beside it.

  Args:
    workdir: the training run's --workdir (local or gs://).
    output: the file (npz, params) or directory (savedmodel) to create.
    format: one of FORMATS.
    step: the checkpoint to export; None for the latest complete one.
    overwrite: replace an existing export at `output`.
    features: names from `models.FEATURES`: a SavedModel also gets a `features` signature
      returning these maps.
    output_stride: 8, 16 or 32, the stride of the deepest of those maps.
  """
  if format not in FORMATS:
    raise errors.ConfigError(f"Unknown export format {format!r}; choose one of "
                             f"{', '.join(FORMATS)}.")
  features = tuple(features)
  if features and format != "savedmodel":
    raise errors.ConfigError(f"--features adds a signature to a SavedModel; it does nothing for "
                             f"--format={format}. Pass --format=savedmodel, or load the {format} "
                             "export with models.create(..., features=...).")
  atomic.check_scheme(workdir, "--workdir")
  output = epath.Path(output)
  _check_output(output, format, overwrite)
  trained = load_checkpoint(workdir, step)
  if features:  # Validates the names and the stride before anything is written.
    models.create(trained.record.model, num_classes=None, features=features,
                  output_stride=output_stride)
  info = metadata(trained, format, features, output_stride)
  staged = atomic.temporary_path(output)
  staged_metadata = metadata_path(staged, format)
  _check_writable(output.parent, staged, output)
  try:
    write = _WRITERS[format]
    if features:
      write = functools.partial(write, features=features, output_stride=output_stride)
    write(trained, staged)
    staged_metadata.write_text(json.dumps(info, indent=2))
    _put_in_place(staged, output)
    if format != "savedmodel":
      _put_in_place(staged_metadata, metadata_path(output, format))
  finally:
    for leftover in (staged, staged_metadata):
      if leftover.is_dir():
        leftover.rmtree()
      elif leftover.exists():
        leftover.unlink()
  return info


def _define_flags() -> None:
  # Defined only when run as a program, so importing the library registers no flags.
  flags.DEFINE_string("workdir", None, "The training run's --workdir.")
  flags.DEFINE_string("output", None, "File (npz, params) or directory (savedmodel) to write; "
                      "its metadata goes to PATH.json, or PATH/metadata.json for a SavedModel.")
  flags.DEFINE_string("format", "npz", f"One of {', '.join(FORMATS)}.")
  flags.DEFINE_integer("step", None, "Checkpoint step to export; default: the latest.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing export at --output.")
  flags.DEFINE_list("features", [], "SavedModel only: also a `features` signature returning these "
                    f"maps, from {', '.join(models.FEATURES)}.")
  flags.DEFINE_integer("output_stride", 32, "Stride of the deepest --features map: 8, 16 (the "
                       "last stages dilate) or 32.")
  flags.mark_flags_as_required(["workdir", "output"])


def main(argv) -> None:
  del argv  # Flags only.
  # orbax and TF log every step of a restore and a save; this program reports in one line.
  logging.set_verbosity(logging.ERROR)
  args = flags.FLAGS
  info = export(args.workdir, args.output, args.format, args.step, args.overwrite,
                tuple(args.features), args.output_stride)
  print(f"Exported {info['model']} step {info['step']} ({info['num_classes']} classes, "
        f"{info['resolution'][0]} px) as {info['format']} to {args.output}")


if __name__ == "__main__":
  _define_flags()
  command_line.run(main)
