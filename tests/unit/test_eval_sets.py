"""The evaluation sets read and scored end to end: TFDS sets through `tfds.testing.mock_data`
with each builder's real features, an ObjectNet folder, and models whose logits the test sets."""

import hashlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import objectnet_folder
import tfds_metadata
from big_transfer import data, errors, sharding
from big_transfer.data import class_lists, eval_sets, objectnet
from big_transfer.training import evaluators

CROP = 16
BATCH = 8
NUM_EXAMPLES = 21  # Not a multiple of the batch: the last batch is padded.


@pytest.fixture(scope="module")
def batch_sharding():
  return sharding.batch_sharding(sharding.make_mesh())


def _key(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _logits_model(choose, batch_sharding):
  """A "model" whose logits `choose(image (crop, crop, 3)) -> (1000,)` sets per image."""
  def logits_fn(params, images):
    del params
    rows = [choose(image) for image in np.asarray(jax.device_get(images))]
    return jax.device_put(np.stack(rows).astype(np.float32), batch_sharding)
  return logits_fn


def _evaluate(name, logits_fn, batch_sharding, data_dir="/unused/by/mock", recipe="finetune"):
  return evaluators.evaluate(eval_sets.parse(name), None, logits_fn, data_dir=data_dir,
                             recipe=recipe, crop=CROP, batch_size=BATCH,
                             batch_sharding=batch_sharding)


# --- ObjectNet: a folder with the release's mapping files. ------------------------------------

@pytest.fixture(scope="module")
def objectnet_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("objectnet-1.0")
  objectnet_folder.write(root)
  return root


def test_objectnet_mapping_reads_the_shared_classes_through_the_release_files(objectnet_dir):
  mapping = objectnet.read_mapping(objectnet_dir)
  assert mapping.folders == ("alarm_clock", "banana", "chair")  # zebra_toy is not shared
  assert mapping.imagenet_classes == ((5,), (6, 7), (9,))


def _interior_model(prediction_of_grey, batch_sharding):
  """Predicts from an image's grey value; any framing pixel (the white frame, resized into the
  view when it is not cut off) makes it predict ImageNet class 9. Class 100, outside the
  mapping, always has the highest logit: only ObjectNet's restriction hides it."""
  def choose(image):
    pixels = (image + 1) * 127.5
    logits = np.zeros(class_lists.IMAGENET_CLASSES)
    logits[100] = 10.0
    framed = pixels.max() > pixels.min() + 1
    # Padding (all zeros in [-1, 1]) is never counted; it predicts class 0.
    logits[9 if framed else prediction_of_grey.get(int(round(pixels.mean())), 0)] = 1.0
    return logits
  return _logits_model(choose, batch_sharding)


def test_objectnet_cuts_the_frame_skips_unshared_folders_and_restricts_to_the_mapping(
    objectnet_dir, batch_sharding):
  grey = objectnet_folder.INTERIOR
  # Alarm clock -> 5 (right), banana -> 7 (right: it maps to {6, 7}), chair -> 6 (wrong).
  model = _interior_model({grey["alarm_clock"]: 5, grey["banana"]: 7, grey["chair"]: 6},
                          batch_sharding)
  result = _evaluate(f"objectnet:{objectnet_dir}", model, batch_sharding)
  # 2 + 3 + 2 images of the shared classes; zebra_toy's 4 are not scored.
  assert result["examples"] == 7 and result["classes"] == 4
  assert result["accuracy"] == pytest.approx(5 / 7)
  assert result["accuracy_1000way"] == 0.0  # class 100 wins every unrestricted argmax


def test_without_the_frame_cut_the_frame_would_reach_the_view(objectnet_dir, batch_sharding,
                                                              monkeypatch):
  """The guard of the test above: with no border cut, every image shows its frame."""
  monkeypatch.setattr(objectnet, "BORDER", 0)
  model = _interior_model({}, batch_sharding)
  result = _evaluate(f"objectnet:{objectnet_dir}", model, batch_sharding)
  assert result["accuracy"] == pytest.approx(2 / 7)  # class 9: only the chairs are right


def test_objectnet_without_its_mappings_is_one_data_error(tmp_path):
  with pytest.raises(errors.DataError, match="lacks folder_to_objectnet_label.json"):
    data.check_eval_set(eval_sets.parse(f"objectnet:{tmp_path}"), None)


# --- TFDS sets: mock_data with each builder's real features. ----------------------------------

@pytest.fixture
def mocked(tmp_path):
  for name, split in (("imagenet2012_real", "validation"), ("imagenet_a", "test"),
                      ("imagenet_r", "test"), ("imagenet_v2/matched-frequency", "test"),
                      ("imagenet_sketch", "test"), ("imagenet2012", "validation")):
    tfds_metadata.write_metadata(tmp_path, name, {split: NUM_EXAMPLES})
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    yield str(tmp_path)


def _labels_by_image(name, data_dir) -> dict[str, np.ndarray]:
  """image key -> the accepted ImageNet classes (bool (1000,)) of each example, as read."""
  one = data.eval_set_pass(eval_sets.parse(name), data_dir, "finetune", CROP, BATCH,
                           process_index=0, process_count=1)
  table = {}
  for batch in one.batches:
    for image, label, mask in zip(batch["image"], batch["label"], batch["mask"], strict=True):
      if mask:
        table[_key(image)] = (label > 0) @ one.accepts
  return table


def test_real_reads_each_image_with_its_real_label_set_as_multi_hot(mocked):
  read = _labels_by_image("imagenet2012_real", mocked)
  sizes = sorted(int(s.sum()) for s in read.values())
  assert len(read) == NUM_EXAMPLES
  assert sizes[0] >= 1 and sizes[-1] > 1  # mock_data draws sets of many labels, none empty


def test_real_scores_a_hit_when_the_prediction_is_in_the_set(mocked, batch_sharding):
  accepted = _labels_by_image("imagenet2012_real", mocked)
  # Every other image (by key) predicts one of its labels, the others a class outside its set.
  right = {k: i % 2 == 0 for i, k in enumerate(sorted(accepted))}

  def choose(image):
    labels = accepted.get(_key(image), np.zeros(class_lists.IMAGENET_CLASSES, bool))  # padding
    logits = np.zeros(class_lists.IMAGENET_CLASSES)
    logits[np.flatnonzero(labels)[0] if labels.any() and right[_key(image)]
           else np.flatnonzero(~labels)[0]] = 1.0
    return logits

  result = _evaluate("imagenet2012_real", _logits_model(choose, batch_sharding), batch_sharding,
                     data_dir=mocked)
  # (mock_data draws no empty set; test_evaluators.py holds the exclusion of empty ones.)
  empty = [k for k, labels in accepted.items() if not labels.any()]
  scored = [k for k in accepted if k not in empty]
  assert result["excluded"] == len(empty) and result["examples"] == len(scored)
  assert result["accuracy"] == pytest.approx(np.mean([right[k] for k in scored]))


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_a_and_r_take_the_argmax_over_their_200_classes(mocked, batch_sharding, name):
  accepted = _labels_by_image(name, mocked)
  subset = class_lists.subset_indices(name)
  outside = int(np.setdiff1d(np.arange(class_lists.IMAGENET_CLASSES), subset)[0])

  def choose(image):  # The true label second, behind a class the set never shows.
    logits = np.zeros(class_lists.IMAGENET_CLASSES)
    if _key(image) in accepted:  # not padding
      logits[np.flatnonzero(accepted[_key(image)])[0]] = 1.0
    logits[outside] = 2.0
    return logits

  result = _evaluate(name, _logits_model(choose, batch_sharding), batch_sharding,
                     data_dir=mocked)
  labels = [int(np.flatnonzero(a)[0]) for a in accepted.values()]
  # mock_data draws labels over all 1000 classes; one outside the 200 cannot be predicted,
  # and a label-less tie among the 200 goes to the first of them.
  expected = np.mean([label in subset or label == subset[0] for label in labels])
  assert result["examples"] == NUM_EXAMPLES and result["classes"] == 200
  assert result["accuracy"] == pytest.approx(expected)
  assert result["accuracy_1000way"] == 0.0


@pytest.mark.parametrize("name", ["imagenet_v2", "imagenet_sketch", "imagenet2012"])
def test_single_label_sets_score_top1_over_all_classes(mocked, batch_sharding, name):
  accepted = _labels_by_image(name, mocked)

  def choose(image):
    logits = np.zeros(class_lists.IMAGENET_CLASSES)
    if _key(image) in accepted:  # not padding
      logits[np.flatnonzero(accepted[_key(image)])[0]] = 1.0
    return logits

  result = _evaluate(name, _logits_model(choose, batch_sharding), batch_sharding,
                     data_dir=mocked)
  assert result == {"accuracy": 1.0, "top5": 1.0, "examples": NUM_EXAMPLES}


def test_an_unprepared_set_names_the_tfds_build_command(tmp_path):
  with pytest.raises(errors.DataError, match=r"tfds build imagenet_v2/matched-frequency"):
    data.check_eval_set(eval_sets.parse("imagenet_v2"), str(tmp_path))
