"""The published BiT npz layout: round trips, head replacement and every error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

import bit_reference
from big_transfer import errors, models
from big_transfer.models import interop


def _shapes(model):
  """The params tree of `model` as shapes and dtypes, traced, not run."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]


def _params(model, seed=0):
  """Params of `model` holding random values, made from its shapes: an eager `init` would compile
  each of its operations, tens of CPU seconds for nothing these tests look at (the model's own
  initialization is tests/unit/test_models.py's)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), _shapes(model))


@pytest.fixture(scope="module")
def r50_npz(tmp_path_factory):
  weights = bit_reference.random_published_weights(50, 1, num_classes=21)
  path = tmp_path_factory.mktemp("npz") / "BiT-M-R50x1.npz"
  np.savez(path, **weights)
  return path, weights


def test_npz_info_reads_the_architecture_off_the_file(r50_npz):
  path, weights = r50_npz
  info = interop.npz_info(path)
  assert (info.depth, info.width, info.blocks, info.num_classes) == (50, 1, (3, 4, 6, 3), 21)
  assert info.num_params == sum(w.size for w in weights.values())
  assert info.name == "R50x1"


def test_published_file_round_trips_bit_exactly(r50_npz, tmp_path):
  path, weights = r50_npz
  out = tmp_path / "again.npz"
  interop.save_bit_npz(interop.load_bit_npz(path), out)
  again = np.load(out, allow_pickle=False)
  assert sorted(again.files) == sorted(weights)
  for key, value in weights.items():
    assert again[key].dtype == np.float32
    np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_model_params_round_trip_bit_exactly(tmp_path):
  model = models.ResNetV2(depth=[1, 2, 1, 1], width=2, num_classes=5)
  params = _params(model)
  interop.save_bit_npz(params, tmp_path / "m.npz")
  loaded = interop.load_bit_npz(tmp_path / "m.npz")
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert interop.npz_info(tmp_path / "m.npz").depth == (1, 2, 1, 1)


def test_headless_params_round_trip(tmp_path):
  model = models.ResNetV2(depth=[1, 1, 1, 1], width=1, num_classes=None)
  interop.save_bit_npz(_params(model), tmp_path / "h.npz")
  assert interop.npz_info(tmp_path / "h.npz").num_classes is None
  assert "head" not in interop.load_bit_npz(tmp_path / "h.npz")


def test_new_head_replaces_old_and_body_is_loaded(r50_npz):
  path, weights = r50_npz
  pretrained = interop.load_bit_npz(path)
  model = interop.npz_info(path).model(num_classes=10)
  init = _params(model)  # Random, so the head kept is told apart from the checkpoint's.
  params, report = interop.merge_pretrained(init, pretrained)
  assert params["head"]["kernel"].shape == (2048, 10)
  np.testing.assert_array_equal(params["head"]["kernel"], init["head"]["kernel"])
  np.testing.assert_array_equal(params["head"]["bias"], init["head"]["bias"])
  np.testing.assert_array_equal(params["block3_unit02"]["conv2"]["kernel"],
                                weights["resnet/block3/unit02/b/standardized_conv2d/kernel"])
  assert set(dict(report.reinitialized)) == {"head/kernel", "head/bias"}
  assert len(report.loaded) == len(jax.tree.leaves(init)) - 2
  assert "re-initialized head/kernel: fine-tuning starts from a new head" in report.summary()


def test_a_checkpoint_head_that_fits_is_still_replaced_by_the_new_head(r50_npz):
  path, weights = r50_npz
  model = interop.npz_info(path).model()  # The file's own 21 classes.
  init = _params(model)
  params, report = interop.merge_pretrained(init, interop.load_bit_npz(path))
  np.testing.assert_array_equal(params["head"]["kernel"], init["head"]["kernel"])
  assert "head/bias" in dict(report.reinitialized)
  kept, _ = interop.merge_pretrained(init, interop.load_bit_npz(path), keep_head=True)
  np.testing.assert_array_equal(kept["head"]["kernel"],
                                weights["resnet/head/conv2d/kernel"].reshape(2048, 21))


def test_merge_into_headless_model_reports_unused_head(r50_npz):
  path, _ = r50_npz
  init = _params(interop.npz_info(path).model(num_classes=None))
  _, report = interop.merge_pretrained(init, interop.load_bit_npz(path))
  assert set(report.unused) == {"head/kernel", "head/bias"}


def test_merge_refuses_a_different_architecture_naming_both(r50_npz):
  path, _ = r50_npz
  for other in ("R50x3", "R14x1"):  # R14x1's arrays all exist in an R50x1 with their shapes.
    init = _shapes(models.create(other, num_classes=10))  # Only the shapes are compared.
    with pytest.raises(errors.CheckpointError,
                       match=r"weights are of an R50x1 \(units per stage 3, 4, 6, 3\), the model "
                             rf"is an {other}"):
      interop.merge_pretrained(init, interop.load_bit_npz(path))


def test_partial_load_takes_only_the_arrays_that_fit_and_reports_the_rest(r50_npz):
  path, weights = r50_npz
  init = _params(models.create("R14x1", num_classes=10))
  params, report = interop.merge_pretrained(init, interop.load_bit_npz(path), allow_partial=True)
  np.testing.assert_array_equal(params["block4_unit01"]["conv3"]["kernel"],
                                weights["resnet/block4/unit01/c/standardized_conv2d/kernel"])
  assert len(report.loaded) == len(jax.tree.leaves(init)) - 2
  assert "not used from the checkpoint: block3_unit06/conv1/kernel" in report.summary()


def _write(path, arrays):
  np.savez(path, **arrays)
  return path


def test_wrong_shape_names_key_and_both_shapes(r50_npz, tmp_path):
  _, weights = r50_npz
  bad = dict(weights)
  bad["resnet/block2/unit03/b/standardized_conv2d/kernel"] = np.zeros((3, 3, 128, 64), np.float32)
  with pytest.raises(ValueError, match=r"'resnet/block2/unit03/b/standardized_conv2d/kernel' has "
                                       r"shape \(3, 3, 128, 64\), expected \(3, 3, 128, 128\)"):
    interop.load_bit_npz(_write(tmp_path / "bad.npz", bad))


def test_missing_array_is_named(r50_npz, tmp_path):
  _, weights = r50_npz
  bad = {k: v for k, v in weights.items() if k != "resnet/block4/unit02/c/group_norm/beta"}
  with pytest.raises(ValueError, match=r"missing 1 array\(s\).*'resnet/block4/unit02/c/group_norm/"
                                       r"beta' with shape \(512,\)"):
    interop.load_bit_npz(_write(tmp_path / "bad.npz", bad))


def test_unexpected_array_is_named(r50_npz, tmp_path):
  _, weights = r50_npz
  bad = dict(weights, **{"resnet/extra/kernel": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"unexpected array 'resnet/extra/kernel'"):
    interop.load_bit_npz(_write(tmp_path / "bad.npz", bad))


def test_pickled_arrays_are_refused(r50_npz, tmp_path):
  _, weights = r50_npz
  bad = dict(weights, **{"resnet/group_norm/gamma": np.array([{"x": 1}], dtype=object)})
  with pytest.raises(ValueError, match=r"'resnet/group_norm/gamma' needs pickle.*refusing"):
    interop.load_bit_npz(_write(tmp_path / "bad.npz", bad))


def test_file_that_is_not_npz_says_so(tmp_path):
  path = tmp_path / "notes.npz"
  path.write_text("not a checkpoint")
  with pytest.raises(ValueError, match=r"notes.npz is not an .npz archive \(not a zip file\)") as e:
    interop.load_bit_npz(path)
  assert "pickle" not in str(e.value)  # Never a hint to load untrusted files unsafely.


def test_single_npy_array_is_refused(tmp_path):
  path = tmp_path / "one.npy"
  np.save(path, np.zeros(3))
  with pytest.raises(ValueError, match=r"one.npy is not an .npz archive \(a single .npy array\)"):
    interop.npz_info(path)


def test_missing_file_says_so(tmp_path):
  with pytest.raises(errors.CheckpointError, match=r"No BiT checkpoint at .*nothing.npz"):
    interop.load_bit_npz(tmp_path / "nothing.npz")


def test_file_without_root_is_not_bit(tmp_path):
  with pytest.raises(ValueError, match=r"lacks 'resnet/root_block/standardized_conv2d/kernel'"):
    interop.npz_info(_write(tmp_path / "x.npz", {"a": np.zeros(2)}))


def test_a_save_failing_midway_keeps_the_existing_file_and_leaves_no_temporary(
    r50_npz, tmp_path, monkeypatch):
  path, weights = r50_npz
  out = tmp_path / "keep.npz"
  out.write_bytes(path.read_bytes())
  path_type = type(epath.Path(out))
  write_bytes = path_type.write_bytes

  def write_half_then_fail(self, content):
    write_bytes(self, content[:len(content) // 2])
    raise OSError("No space left on device")

  monkeypatch.setattr(path_type, "write_bytes", write_half_then_fail)
  with pytest.raises(OSError, match="No space left"):
    interop.save_bit_npz(interop.load_bit_npz(path), out)
  assert out.read_bytes() == path.read_bytes()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]


def test_save_replaces_an_existing_file(r50_npz, tmp_path):
  path, weights = r50_npz
  out = tmp_path / "old.npz"
  out.write_text("an older export")
  interop.save_bit_npz(interop.load_bit_npz(path), out)
  assert sorted(np.load(out).files) == sorted(weights)
