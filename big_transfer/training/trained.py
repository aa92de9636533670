"""Trained weights read back for use: a run's checkpoint, a published `.npz` or a `.msgpack`
export with its metadata. Export, evaluation and distillation's teachers read them here."""

import dataclasses
import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from big_transfer import errors, models
from big_transfer.models import interop
from big_transfer.training import checkpoints, run_record

# Where a SavedModel export keeps its metadata (other exports: `PATH.json` beside them).
SAVEDMODEL_METADATA = "metadata.json"


@dataclasses.dataclass(frozen=True)
class Trained:
  """One checkpoint of a run: host float32 params, the run's record, and where it came from."""
  params: dict
  record: run_record.RunRecord
  step: int
  workdir: str

  @property
  def crop(self) -> int:
    """Side of the square images the model was trained and evaluated on."""
    return self.record.resolution

  @property
  def recipe(self) -> str:
    """The run's data recipe, which decides its evaluation view (`preprocess.eval_view`)."""
    return self.record.recipe

  def model(self) -> models.ResNetV2:
    """The network in float32, whatever `model_dtype` it was trained with."""
    return models.create(self.record.model, num_classes=self.record.num_classes)


def load_checkpoint(workdir, step: int | None = None) -> Trained:
  """Reads a run's checkpoint (the latest complete one by default) and its record."""
  ckpts = checkpoints.Checkpoints(workdir, every_steps=1, read_only=True)
  available = ckpts.all_steps()
  if not available:
    raise errors.CheckpointError(f"No checkpoint in {ckpts.directory}: pass the --workdir of a "
                                 "training run (python -m big_transfer.main ... --workdir=DIR).")
  if step is None:
    step = available[-1]
  else:
    ckpts.check_step(step)
  record = ckpts.read_record(step)
  params = ckpts.restore_params(step)
  trained = Trained(jax.tree.map(lambda x: np.asarray(x, np.float32), params), record, step,
                    str(workdir))
  _check_params_fit(trained)
  return trained


def _check_params_fit(trained: Trained) -> None:
  """The checkpoint's params must be those of the model its record names."""
  misfit = first_misfit(trained.model(), trained.params)
  if misfit:
    raise errors.CheckpointError(f"The params of checkpoint step {trained.step} in "
                                 f"{trained.workdir} do not fit the model its record names "
                                 f"({trained.record.model} with "
                                 f"{trained.record.num_classes} classes): {misfit}.")


def first_misfit(network: models.ResNetV2, params: dict) -> str | None:
  """The first parameter whose path or shape in `params` differs from `network`'s, described
  ("block1_unit01/conv1/kernel: expected (1, 1, 64, 64), found None"); None when all fit."""
  expected = jax.eval_shape(network.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3), jnp.float32))["params"]
  shapes = lambda tree: {jax.tree_util.keystr(p): tuple(np.shape(x))
                         for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  want, got = shapes(expected), shapes(params)
  differing = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
  if not differing:
    return None
  return f"{differing[0]}: expected {want.get(differing[0])}, found {got.get(differing[0])}"


def metadata_path(output, format: str) -> epath.Path:
  """Where the metadata of an export goes: `PATH.json`, or `PATH/metadata.json` for a SavedModel."""
  output = epath.Path(output)
  if format == "savedmodel":
    return output / SAVEDMODEL_METADATA
  return output.parent / f"{output.name}.json"


@dataclasses.dataclass(frozen=True)
class Model:
  """A trained network read from a path.

  Attributes:
    description: what it is, for results and messages ("BiT-M-R50x1 step 500 of /runs/x").
    name: the model's name ("BiT-M-R50x1", or "R50x1" for a published .npz).
    network: the float32 network.
    params: its float32 host params.
    resolution, recipe: the evaluation view it was trained for; None when the path does not say
      (a published .npz without export metadata).
  """
  description: str
  name: str
  network: models.ResNetV2
  params: dict
  resolution: int | None
  recipe: str | None


def _metadata_beside(path: epath.Path, format: str) -> dict | None:
  beside = metadata_path(path, format)
  return json.loads(beside.read_text()) if beside.exists() else None


def read(path) -> Model | None:
  """Reads a run's workdir (its latest checkpoint), a `.npz` (published or exported) or a
  `.msgpack` export; None when `path` is none of these, which the caller explains."""
  path = epath.Path(path)
  if (path / checkpoints.SUBDIR).exists():
    trained = load_checkpoint(path)
    return Model(f"{trained.record.model} step {trained.step} of {path}", trained.record.model,
                 trained.model(), trained.params, trained.crop, trained.recipe)
  if path.suffix == ".npz":
    info = interop.npz_info(path)
    meta = _metadata_beside(path, "npz")
    view = (meta["resolution"][0], meta["preprocessing"]["recipe"]) if meta else (None, None)
    return Model(f"{path.name} ({info.name}, {info.num_classes} classes)", info.name,
                 info.model(), interop.load_bit_npz(path), *view)
  if path.suffix == ".msgpack" and path.exists():
    meta = _metadata_beside(path, "params")
    if meta is None:
      raise errors.CheckpointError(f"{path} has no metadata {metadata_path(path, 'params')} "
                                   "beside it, which names its model; use the run's workdir, or "
                                   "export it again with python -m big_transfer.export.")
    network = models.create(meta["model"], num_classes=meta["num_classes"])
    params = jax.tree.map(lambda x: np.asarray(x, np.float32),
                          flax.serialization.msgpack_restore(path.read_bytes()))
    misfit = first_misfit(network, params)
    if misfit:
      raise errors.CheckpointError(f"{path}: its params do not fit the model its metadata names "
                                   f"({meta['model']}): {misfit}.")
    return Model(f"{meta['model']} step {meta['step']} ({path.name})", meta["model"], network,
                 params, meta["resolution"][0], meta["preprocessing"]["recipe"])
  return None
