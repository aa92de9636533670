"""Export: published npz, TF SavedModel with its preprocessing, flax msgpack, metadata, errors."""

import json
import re
import subprocess
import sys
import types

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

import cli
from big_transfer import atomic, data, errors, export, models
from big_transfer.data import preprocess
from big_transfer.models import interop
from big_transfer.recipes import schema as config_lib
from big_transfer.training import checkpoints, run_record, steps

CROP = 32
CLASS_NAMES = ["cat", "dog", "fish", "bird", "frog"]
STEPS = (2, 5)


def _record(recipe: str = "finetune") -> run_record.RunRecord:
  config = config_lib.base()
  config.model = "BiT-S-R14x1"
  config.dataset = "bit_synthetic/upstream"
  config.data.crop = CROP
  config.data.recipe = recipe
  config.batch_size = 8
  return run_record.RunRecord.of_run(config, len(CLASS_NAMES), CLASS_NAMES, "float32")


def _random_params(seed: int) -> dict:
  """Random R14x1 params, shaped by tracing only (compiling the init costs 20 s on 2 cores).

  Nothing is zero or the identity: the head gives non-trivial logits and GN affines matter.
  """
  model = models.create("R14x1", num_classes=len(CLASS_NAMES))
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, CROP, CROP, 3)))["params"]
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape, np.float32)
    return {"scale": 1 + 0.1 * noise, "bias": 0.1 * noise}.get(path[-1].key, noise)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _save(ckpts: checkpoints.Checkpoints, step: int, params: dict, record) -> None:
  """Saves a train state as train.py does: jax.Arrays on a mesh (of 2 devices: saving on all 8
  fake ones takes orbax 12 s)."""
  opt_state = jax.eval_shape(optax.sgd(0.1, momentum=0.9).init, params)
  state = steps.TrainState(step=np.int32(step), params=params,
                           opt_state=jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), opt_state),
                           first_bad_step=np.int32(-1))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  ckpts.save(step, state, record, force=True)
  ckpts.wait()


def _write_run(workdir) -> dict[int, dict]:
  """Checkpoints of an R14x1 at STEPS with distinct random params; returns them by step."""
  ckpts = checkpoints.Checkpoints(workdir, every_steps=1)
  saved = {step: _random_params(seed=step) for step in STEPS}
  for step, params in saved.items():
    _save(ckpts, step, params, _record())
  ckpts.close()
  return saved


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run of the finetune recipe."""
  workdir = tmp_path_factory.mktemp("run")
  return workdir, _write_run(workdir)


@pytest.fixture(scope="module")
def upstream_run(tmp_path_factory):
  """One checkpoint of a run of the upstream recipe, whose evaluation cuts the central square."""
  workdir = tmp_path_factory.mktemp("upstream_run")
  ckpts = checkpoints.Checkpoints(workdir, every_steps=1)
  params = _random_params(seed=11)
  _save(ckpts, 1, params, _record("upstream"))
  ckpts.close()
  return workdir, params


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert a.dtype == np.float32 and a.shape == e.shape
    np.testing.assert_array_equal(a, e)


def test_npz_round_trip_is_bit_exact(run, tmp_path):
  workdir, saved = run
  export.export(workdir, tmp_path / "model.npz", "npz")
  _assert_trees_equal(interop.load_bit_npz(tmp_path / "model.npz"), saved[STEPS[-1]])
  info = interop.npz_info(tmp_path / "model.npz")
  assert (info.name, info.num_classes) == ("R14x1", len(CLASS_NAMES))


def test_an_npz_export_is_staged_under_one_temporary_name(run, tmp_path, monkeypatch):
  staged = []

  def recording(path):
    staged.append(atomic_temporary_path(path))
    return staged[-1]

  atomic_temporary_path = atomic.temporary_path
  monkeypatch.setattr(atomic, "temporary_path", recording)
  export.export(run[0], tmp_path / "model.npz", "npz")
  assert [str(p.parent) for p in staged] == [str(tmp_path)]
  assert re.fullmatch(r"\.model\.npz\.tmp-[0-9a-f]{8}", staged[0].name), staged
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.npz.json"]


def test_step_selects_an_older_checkpoint(run, tmp_path):
  workdir, saved = run
  info = export.export(workdir, tmp_path / "model.npz", "npz", step=STEPS[0])
  assert info["step"] == STEPS[0]
  _assert_trees_equal(interop.load_bit_npz(tmp_path / "model.npz"), saved[STEPS[0]])


def test_params_msgpack_round_trip_is_exact(run, tmp_path):
  workdir, saved = run
  export.export(workdir, tmp_path / "params.msgpack", "params")
  restored = flax.serialization.msgpack_restore((tmp_path / "params.msgpack").read_bytes())
  _assert_trees_equal(restored, saved[STEPS[-1]])


def _export_savedmodel(workdir, path):
  export.export(workdir, path, "savedmodel")
  return path, tf.saved_model.load(str(path)).signatures["serving_default"]


@pytest.fixture(scope="module")
def savedmodel(run, tmp_path_factory):
  return _export_savedmodel(run[0], tmp_path_factory.mktemp("export") / "savedmodel")


@pytest.fixture(scope="module")
def upstream_savedmodel(upstream_run, tmp_path_factory):
  return _export_savedmodel(upstream_run[0], tmp_path_factory.mktemp("export") / "savedmodel")


def test_savedmodel_signature_takes_uint8_images_and_returns_logits(savedmodel):
  _, serve = savedmodel
  (spec,) = serve.structured_input_signature[1].values()
  assert (spec.name, spec.dtype) == ("images", tf.uint8)
  assert spec.shape.as_list() == [None, None, None, 3]
  (output,) = serve.structured_outputs.values()
  assert serve.structured_outputs.keys() == {"logits"}
  assert output.dtype == tf.float32 and output.shape.as_list() == [None, len(CLASS_NAMES)]


_MAX_BATCH = 4


@jax.jit
def _jax_logits_padded(params, inputs):
  return models.create("R14x1", num_classes=len(CLASS_NAMES)).apply({"params": params}, inputs)


def _jax_logits(params, inputs: np.ndarray) -> np.ndarray:
  """The JAX model's logits; padded to one batch size so it compiles once (examples are
  independent under GroupNorm)."""
  padded = np.zeros((_MAX_BATCH, *inputs.shape[1:]), np.float32)
  padded[:len(inputs)] = inputs
  return np.asarray(_jax_logits_padded(params, padded))[:len(inputs)]


def _eval_pipeline_inputs(images: np.ndarray, recipe: str, folder) -> np.ndarray:
  """What `data.eval_batches` feeds the model for uint8 images (n, H, W, 3) of the given recipe:
  float32 (n, CROP, CROP, 3)."""
  # A second class (a data set needs two) whose one image sorts after the images of the first.
  for i, image in enumerate([*images, images[0]]):
    path = folder / "images" / ("a" if i < len(images) else "b") / f"{i:02d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())
  cfg = data.InputConfig(dataset=f"folder:{folder / 'images'}", eval_split="train", recipe=recipe,
                         crop=CROP)
  (batch,) = data.eval_batches(cfg, len(images) + 1, process_index=0, process_count=1)
  return batch["image"][:len(images)]


def _assert_savedmodel_matches_jax_on_the_eval_pipeline(serve, params, recipe, images, folder):
  logits = serve(images=tf.constant(images))["logits"].numpy()
  expected = _jax_logits(params, _eval_pipeline_inputs(images, recipe, folder))
  assert logits.shape == (len(images), len(CLASS_NAMES)) and logits.dtype == np.float32
  assert np.max(np.abs(logits - expected)) <= 1e-4 * np.max(np.abs(expected)), (logits, expected)


@pytest.mark.parametrize("batch,height,width", [(1, 20, 30), (3, 32, 32), (2, 50, 41)])
def test_savedmodel_logits_match_the_jax_model(run, savedmodel, tmp_path, batch, height, width):
  _, saved = run
  _, serve = savedmodel
  images = np.random.default_rng(height).integers(0, 256, (batch, height, width, 3), np.uint8)
  _assert_savedmodel_matches_jax_on_the_eval_pipeline(serve, saved[STEPS[-1]], "finetune",
                                                      images, tmp_path)


@pytest.mark.parametrize("batch,height,width", [(2, 40, 64), (1, 70, 36)], ids=["wide", "tall"])
def test_upstream_savedmodel_preprocesses_non_square_images_as_our_evaluation(
    upstream_run, upstream_savedmodel, tmp_path, batch, height, width):
  _, params = upstream_run
  _, serve = upstream_savedmodel
  images = np.random.default_rng(height).integers(0, 256, (batch, height, width, 3), np.uint8)
  _assert_savedmodel_matches_jax_on_the_eval_pipeline(serve, params, "upstream", images, tmp_path)
  # The whole image squashed to CROP x CROP (the finetune view) is another input altogether.
  squashed = _jax_logits(params, preprocess.eval_view(images, "finetune", CROP).numpy())
  logits = serve(images=tf.constant(images))["logits"].numpy()
  assert np.max(np.abs(logits - squashed)) > 1e-2 * np.max(np.abs(squashed))


@pytest.mark.parametrize("recipe", ["finetune", "upstream"])
def test_savedmodel_converts_to_tflite_with_builtin_ops_only(request, recipe):
  path, serve = request.getfixturevalue("savedmodel" if recipe == "finetune"
                                        else "upstream_savedmodel")
  converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  tflite = tf.lite.Interpreter(model_content=converter.convert())
  images = np.random.default_rng(0).integers(0, 256, (2, 40, 24, 3), np.uint8)
  logits = tflite.get_signature_runner("serving_default")(images=images)["logits"]
  expected = serve(images=tf.constant(images))["logits"].numpy()
  assert np.max(np.abs(logits - expected)) <= 1e-4 * np.max(np.abs(expected))


def _expected_metadata(format: str, workdir) -> dict:
  return {
      "format": format, "model": "BiT-S-R14x1", "architecture": "R14x1", "depth": 14,
      "width": 1, "blocks": [1, 1, 1, 1], "timm_model": None, "num_classes": 5,
      "class_names": CLASS_NAMES, "resolution": [CROP, CROP], "dtype": "float32",
      "dataset": "bit_synthetic/upstream", "step": STEPS[-1], "workdir": str(workdir),
      "training_config": _record().config,
      "big_transfer_version": re.search(r'__version__ = "([^"]+)"',
                                        (cli.REPO / "big_transfer/__init__.py").read_text())[1],
  }


@pytest.mark.parametrize("format,metadata_name", [("npz", "model.json"),
                                                  ("params", "model.json"),
                                                  ("savedmodel", "model/metadata.json")])
def test_metadata_is_complete(run, savedmodel, tmp_path, format, metadata_name):
  workdir, saved = run
  if format == "savedmodel":
    path = savedmodel[0]
    metadata = json.loads((path / "metadata.json").read_text())
  else:
    returned = export.export(workdir, tmp_path / "model", format)
    metadata = json.loads((tmp_path / metadata_name).read_text())
    assert metadata == returned
  for key, value in _expected_metadata(format, workdir).items():
    assert metadata[key] == value, key
  assert metadata["num_params"] == sum(x.size for x in jax.tree.leaves(saved[STEPS[-1]]))
  assert metadata["output"] == {"name": "logits", "dtype": "float32", "shape": [None, 5],
                                "activation": "softmax"}
  assert metadata["input"]["preprocessing_included"] == (format == "savedmodel")
  assert metadata["input"]["dtype"] == ("uint8" if format == "savedmodel" else "float32")
  prep = metadata["preprocessing"]
  assert prep["recipe"] == "finetune" and prep["central_crop"] is None
  assert prep["resize"] == {"height": CROP, "width": CROP, "method": "bilinear",
                            "antialias": False}
  assert (prep["scale"], prep["offset"]) == (1 / 127.5, -1.0)
  assert "bilinear" in prep["description"] and "127.5" in prep["description"]


def test_metadata_of_an_upstream_run_describes_the_central_crop(upstream_run, tmp_path):
  metadata = export.export(upstream_run[0], tmp_path / "model.npz", "npz")
  prep = metadata["preprocessing"]
  assert prep["recipe"] == "upstream"
  assert prep["resize"] == {"shorter_side": round(CROP * 256 / 224), "method": "bilinear",
                            "antialias": False}
  assert prep["central_crop"] == {"height": CROP, "width": CROP}
  assert f"shorter side to {round(CROP * 256 / 224)}" in prep["description"]
  assert f"central {CROP}x{CROP} crop" in prep["description"]


def test_published_variants_name_their_timm_model():
  # timm's names of the six published BiT networks (timm/models/resnetv2.py).
  assert export.TIMM_MODELS == {
      "R50x1": "resnetv2_50x1_bit", "R50x3": "resnetv2_50x3_bit",
      "R101x1": "resnetv2_101x1_bit", "R101x3": "resnetv2_101x3_bit",
      "R152x2": "resnetv2_152x2_bit", "R152x4": "resnetv2_152x4_bit"}


def test_overwrite_replaces_an_existing_export(run, tmp_path):
  workdir, saved = run
  (tmp_path / "model.npz").write_text("old")
  (tmp_path / "model.npz.json").write_text("old")
  export.export(workdir, tmp_path / "model.npz", "npz", overwrite=True)
  _assert_trees_equal(interop.load_bit_npz(tmp_path / "model.npz"), saved[STEPS[-1]])
  assert json.loads((tmp_path / "model.npz.json").read_text())["format"] == "npz"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.npz.json"]


def test_overwrite_never_replaces_a_directory_that_is_not_a_savedmodel(run, tmp_path):
  workdir, _ = run
  (tmp_path / "notes.txt").write_text("keep me")
  with pytest.raises(errors.ConfigError, match="not a SavedModel"):
    export.export(workdir, tmp_path, "savedmodel", overwrite=True)
  assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_failed_export_leaves_the_existing_one_and_no_temporary_files(run, tmp_path,
                                                                        monkeypatch):
  workdir, _ = run
  (tmp_path / "model.npz").write_text("old")

  def fail_halfway(trained, path):
    path.write_text("half")
    raise OSError("disk full")

  monkeypatch.setitem(export._WRITERS, "npz", fail_halfway)
  with pytest.raises(OSError, match="disk full"):
    export.export(workdir, tmp_path / "model.npz", "npz", overwrite=True)
  assert (tmp_path / "model.npz").read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_record_of_an_older_version_is_refused_naming_what_it_lacks(tmp_path):
  older = {k: v for k, v in _record().to_json().items() if k not in ("config", "recipe")}
  ckpts = checkpoints.Checkpoints(tmp_path / "run", every_steps=1)
  _save(ckpts, 1, _random_params(seed=0), types.SimpleNamespace(to_json=lambda: older))
  ckpts.close()
  with pytest.raises(errors.CheckpointError, match="lacks recipe, config: it was written by an "
                                                   "older big_transfer"):
    export.export(tmp_path / "run", tmp_path / "model.npz")
  assert not (tmp_path / "model.npz").exists()


@pytest.fixture(scope="module")
def features_savedmodel(upstream_run, tmp_path_factory):
  """The upstream run exported with a `features` signature at output stride 16."""
  path = tmp_path_factory.mktemp("export") / "backbone"
  info = export.export(upstream_run[0], path, "savedmodel", features=("stem", "C3", "C5"),
                       output_stride=16)
  return info, tf.saved_model.load(str(path)).signatures


def test_features_signature_is_described_in_the_metadata(features_savedmodel):
  info, signatures = features_savedmodel
  assert set(signatures) == {"serving_default", export.FEATURES_SIGNATURE}
  assert info["features"]["output_stride"] == 16
  assert [(m["name"], m["stride"], m["channels"]) for m in info["features"]["maps"]] == [
      ("stem", 2, 64), ("C3", 8, 512), ("C5", 16, 2048)]


@pytest.mark.parametrize("height,width", [(32, 32), (50, 37)])
def test_features_signature_returns_the_jax_maps_at_any_size(upstream_run, features_savedmodel,
                                                               height, width):
  _, params = upstream_run
  info, signatures = features_savedmodel
  images = np.random.default_rng(height).integers(0, 256, (2, height, width, 3), np.uint8)
  maps = signatures[export.FEATURES_SIGNATURE](images=tf.constant(images))
  backbone = models.create("R14x1", num_classes=None, features=("stem", "C3", "C5"),
                           output_stride=16)
  body = {k: v for k, v in params.items() if k != "head"}
  expected = backbone.apply({"params": body}, images.astype(np.float32) / 127.5 - 1)
  assert set(maps) == {m["name"] for m in info["features"]["maps"]}
  for spec in info["features"]["maps"]:
    got, want = maps[spec["name"]].numpy(), np.asarray(expected[spec["name"]])
    assert got.shape == (2, -(-height // spec["stride"]), -(-width // spec["stride"]),
                         spec["channels"]) == want.shape
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want)), spec["name"]


def test_features_need_the_savedmodel_format(run, tmp_path):
  with pytest.raises(errors.ConfigError, match="--features adds a signature to a SavedModel.*"
                     "--format=npz"):
    export.export(run[0], tmp_path / "model.npz", "npz", features=("C5",))
  assert not (tmp_path / "model.npz").exists()


def test_unknown_feature_name_is_refused_before_writing(run, tmp_path):
  with pytest.raises(errors.ConfigError, match="features must be distinct names.*'P3'"):
    export.export(run[0], tmp_path / "backbone", "savedmodel", features=("P3",))
  assert not list(tmp_path.iterdir())


def _run_cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "big_transfer.export", *args], cwd=cli.REPO,
                        text=True, capture_output=True, timeout=300,
                        env=cli.env_with_devices(1))


def test_cli_exports_the_latest_checkpoint_written_on_other_devices(run, tmp_path):
  workdir, saved = run  # Written on 2 devices, exported by a process that has one.
  result = _run_cli(f"--workdir={workdir}", f"--output={tmp_path / 'model.npz'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"step {STEPS[-1]}" in result.stdout
  _assert_trees_equal(interop.load_bit_npz(tmp_path / "model.npz"), saved[STEPS[-1]])


def test_cli_fails_in_one_line_without_a_checkpoint(tmp_path):
  result = _run_cli(f"--workdir={tmp_path / 'empty'}", f"--output={tmp_path / 'model.npz'}")
  cli.assert_fails_in_one_line(result, "No checkpoint in", str(tmp_path / "empty"))
  assert not (tmp_path / "model.npz").exists()


def test_cli_fails_in_one_line_on_a_missing_step_and_lists_the_steps(run, tmp_path):
  workdir, _ = run
  result = _run_cli(f"--workdir={workdir}", f"--output={tmp_path / 'model.npz'}", "--step=3")
  cli.assert_fails_in_one_line(result, "No checkpoint at step 3", "available steps: 2, 5")
  assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_existing_output_without_overwrite(run, tmp_path):
  workdir, _ = run
  (tmp_path / "model.npz").write_text("old")
  result = _run_cli(f"--workdir={workdir}", f"--output={tmp_path / 'model.npz'}")
  cli.assert_fails_in_one_line(result, str(tmp_path / "model.npz"), "already exist", "--overwrite")
  assert (tmp_path / "model.npz").read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_cli_fails_in_one_line_on_an_unknown_format_and_lists_the_formats(run, tmp_path):
  workdir, _ = run
  result = _run_cli(f"--workdir={workdir}", f"--output={tmp_path / 'model.onnx'}",
                    "--format=onnx")
  cli.assert_fails_in_one_line(result, "'onnx'", "npz, savedmodel, params")
  assert list(tmp_path.iterdir()) == []
