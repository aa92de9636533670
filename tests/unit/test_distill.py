"""Distillation: the loss, the frozen sharded teacher, identical views, metrics, the run record."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from big_transfer import data, errors, models, sharding
from big_transfer.models import interop
from big_transfer.recipes import schema as config_lib
from big_transfer.training import checkpoints, distill, evaluation, experiment, run_record

CLASSES = 5


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_loss_is_t_squared_kl_to_the_mean_teacher_probabilities_as_numpy_computes_it():
  rng = np.random.default_rng(0)
  student = rng.normal(0, 3, (6, CLASSES)).astype(np.float32)
  teachers = [rng.normal(0, 3, (6, CLASSES)).astype(np.float32) for _ in range(2)]
  t = 2.5
  p = np.mean([_softmax(x.astype(np.float64) / t) for x in teachers], axis=0)
  log_q = np.log(_softmax(student.astype(np.float64) / t))
  expected = t ** 2 * np.mean(np.sum(p * (np.log(p) - log_q), axis=-1))
  probs = jnp.mean(jnp.stack([jax.nn.softmax(x / t) for x in teachers]), axis=0)
  np.testing.assert_allclose(distill.distillation_loss(student, probs, t), expected, rtol=1e-5)


def test_kl_is_zero_for_a_student_equal_to_its_teacher_and_finite_for_zero_probabilities():
  logits = jnp.array([[3.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
  np.testing.assert_allclose(distill.kl_per_example(logits, jax.nn.softmax(logits)), 0, atol=1e-6)
  one_hot = jnp.array([[1.0, 0.0, 0.0]])
  kl = distill.kl_per_example(jnp.array([[0.0, 0.0, 0.0]]), one_hot)
  np.testing.assert_allclose(kl, [np.log(3)], rtol=1e-6)


def test_agreement_and_kl_count_only_real_examples():
  student = jnp.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
  teacher = jax.nn.softmax(jnp.array([[4.0, 0, 0], [0, 0, 4.0], [0, 0, 4.0], [0, 4.0, 0]]))
  mask = jnp.array([1.0, 1.0, 1.0, 0.0])  # The last example is padding.
  sums = distill.distance_sums(student, teacher, mask)
  assert float(sums["agree"]) == 2            # Examples 0 and 2.
  expected_kl = sum(float(distill.kl_per_example(student[i:i + 1], teacher[i:i + 1])[0])
                    for i in range(3))
  np.testing.assert_allclose(float(sums["kl"]), expected_kl, rtol=1e-6)
  assert expected_kl > 0


def _teacher_npz(path, seed=1):
  model = models.ResNetV2(depth=14, width=1, num_classes=CLASSES)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))["params"]
  # A non-zero head, so the teacher's probabilities are not uniform.
  params["head"]["kernel"] = jax.random.normal(jax.random.key(seed + 1),
                                               params["head"]["kernel"].shape)
  interop.save_bit_npz(params, path)
  return path


def _config(teacher, **overrides):
  config = config_lib.base()
  config.model = "BiT-S-R14x1"
  config.dataset = "bit_synthetic/upstream"
  config.data.crop = 16
  config.batch_size = 16
  config.total_steps = 4
  config.warmup_steps = 1
  config.lr = 0.01
  config.optimizer = "adam"
  config.lr_decay = "cosine"
  config.weight_decay = 1e-4
  config.grad_clip_norm = 1.0
  config.distill.teacher = str(teacher)
  for key, value in overrides.items():
    config[key] = value
  return config


TWO_DEVICES = sharding.make_mesh(1, 2, devices=jax.devices()[:2])
INFO = data.DatasetInfo(num_train_examples=100, image_size=(64, 64), num_classes=CLASSES,
                        class_names=None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A distillation experiment on 2 devices (data 1 x fsdp 2) after two steps."""
  tmp = tmp_path_factory.mktemp("distill")
  # No warm-up: the first step moves the zero head, so the second reaches every parameter.
  exp = experiment.build(_config(_teacher_npz(tmp / "teacher.npz"), warmup_steps=0),
                         mesh=TWO_DEVICES, dataset_info=INFO)
  frozen = exp.frozen_inputs()
  state = exp.steps.create(jax.random.key(0))
  initial = jax.device_get(state.params)
  rng = np.random.default_rng(0)
  for _ in range(2):
    batch = {"image": rng.uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32),
             "label": np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, 16)]}
    state, metrics = exp.steps.train(state, jax.device_put(batch, exp.batch_sharding), *frozen)
  return exp, frozen, state, initial, metrics, tmp


def test_training_changes_the_student_and_leaves_the_teacher_as_loaded(trained):
  exp, frozen, state, initial, metrics, _ = trained
  assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), initial,
                         jax.device_get(state.params))
  assert all(jax.tree.leaves(changed))
  loaded = interop.load_bit_npz(exp.teacher.paths[0])
  for got, want in zip(jax.tree.leaves(jax.device_get(frozen)), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(got, want)


def test_the_teachers_run_once_on_the_eval_split_and_their_top1_is_reported_once(trained,
                                                                                monkeypatch):
  """Two evaluations: the teachers' eval step runs on the first one's batches only, and the
  second, from the kept predictions, reports what the first did but the teachers' top-1."""
  exp, frozen, state, *_ = trained
  rng = np.random.default_rng(1)
  batches = [{"image": rng.uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32),
              "label": np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, 16)],
              "mask": np.ones(16, np.float32)} for _ in range(3)]
  batches[-1]["mask"][12:] = 0  # The last batch's padding.
  monkeypatch.setattr(data, "eval_batches", lambda cfg, batch_size: iter(batches))
  calls = []

  def counted_teacher_eval(*args):
    calls.append(args)
    return exp.steps.teacher_eval(*args)

  teacher = evaluation.TeacherPredictions(counted_teacher_eval, *frozen)
  first, second = (evaluation.top1(state.params, exp.steps, exp.input_cfg, 16,
                                   exp.batch_sharding, teacher) for _ in range(2))
  assert len(calls) == len(batches)
  assert "teacher_accuracy" not in second and teacher.accuracy == first["teacher_accuracy"]
  # A kept prediction paired with another batch would change the agreement and the KL.
  for key in ("accuracy", "loss", "agreement", "kl", "examples"):
    assert second[key] == pytest.approx(first[key], rel=1e-6), key
  assert first["examples"] == 44 and first["kl"] > 0
  # The teachers' top-1 over the real examples, from their probabilities batch by batch.
  probs = np.concatenate([np.asarray(exp.steps.teacher_eval(
      frozen[0], jax.device_put(batch, exp.batch_sharding))[0]) for batch in batches])
  real = np.concatenate([batch["mask"] for batch in batches]) > 0
  labels = np.concatenate([np.argmax(batch["label"], -1) for batch in batches])
  assert first["teacher_accuracy"] == pytest.approx(
      np.mean(np.argmax(probs, -1)[real] == labels[real]))


def test_the_teacher_is_sharded_by_the_students_rules(trained):
  exp, frozen, *_ = trained
  kernel = frozen[0][0]["block4_unit01"]["conv2"]["kernel"]  # 3x3x512x512: large enough to split.
  assert kernel.sharding.spec == exp.state_shardings.params["block4_unit01"]["conv2"]["kernel"].spec
  assert "fsdp" in kernel.sharding.spec
  assert kernel.addressable_shards[0].data.shape[-1] == 256


def test_checkpoints_hold_the_student_alone_and_the_record_names_the_teacher(trained):
  exp, _, state, _, _, tmp = trained
  ckpts = checkpoints.Checkpoints(tmp / "run", every_steps=1)
  ckpts.save(2, state, exp.record, force=True)
  ckpts.wait()
  with ocp.StandardCheckpointer() as reader:
    saved = reader.metadata(tmp / "run" / checkpoints.SUBDIR / "2" / "state").item_metadata
  assert set(saved) == {"step", "params", "opt_state", "first_bad_step"}
  shapes = lambda tree: sorted(tuple(x.shape) for x in jax.tree.leaves(tree))
  assert shapes(saved["params"]) == shapes(exp.abstract_state.params)
  assert len(jax.tree.leaves(saved)) == len(jax.tree.leaves(exp.abstract_state))
  record = ckpts.read_record(2)
  ckpts.close()
  assert record.teacher == (str(tmp / "teacher.npz"),)
  assert record.teacher_sha256 == distill.weights_sha256([interop.load_bit_npz(record.teacher[0])])


def test_a_resume_with_other_teacher_weights_is_refused_and_a_moved_copy_accepted(trained):
  exp, *_, tmp = trained
  copy = tmp / "copy" / "teacher.npz"
  copy.parent.mkdir()
  copy.write_bytes((tmp / "teacher.npz").read_bytes())
  moved = experiment.build(_config(copy), mesh=TWO_DEVICES, dataset_info=INFO)
  exp.record.check_resumable_by(moved.record)
  other = experiment.build(_config(_teacher_npz(tmp / "other.npz", seed=7)), mesh=TWO_DEVICES,
                           dataset_info=INFO)
  with pytest.raises(run_record.RunMismatchError, match="teacher_sha256: checkpoint has '"):
    exp.record.check_resumable_by(other.record)


def test_teacher_and_student_see_the_same_mixed_up_pixels(synthetic_data_dir, tmp_path):
  """With the teacher's weights as the student's, the loss on MixUp batches is 0: any other
  view for the teacher (unmixed, another crop) would make the two functions disagree."""
  teacher = _teacher_npz(tmp_path / "teacher.npz")
  config = _config(teacher, num_classes=90)
  config.dataset = "bit_synthetic/upstream"
  config.data.data_dir = synthetic_data_dir
  config.data.mixup_alpha = 1.0
  model = models.ResNetV2(depth=14, width=1, num_classes=90)
  params = model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)))["params"]
  params["head"]["kernel"] = jax.random.normal(jax.random.key(4), params["head"]["kernel"].shape)
  interop.save_bit_npz(params, teacher)
  exp = experiment.build(config, mesh=TWO_DEVICES)
  frozen = exp.frozen_inputs()
  state = exp.steps.create(jax.random.key(0))
  state = state.replace(params=jax.device_put(params, exp.state_shardings.params))
  batch = next(data.train_batches(exp.input_cfg, config.batch_size, config.seed))
  assert np.max(batch["label"], axis=-1).min() < 1  # MixUp mixed the batch.
  _, metrics = exp.steps.train(state, jax.device_put(batch, exp.batch_sharding), *frozen)
  np.testing.assert_allclose(float(metrics["loss"]), 0.0, atol=1e-5)


def test_a_teacher_with_other_classes_fails_naming_both(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"teacher.npz \(R14x1\) has 5 classes, the "
                                               r"student 7"):
    experiment.build(_config(_teacher_npz(tmp_path / "teacher.npz"), num_classes=7),
                     dataset_info=INFO)


def test_a_path_that_is_no_teacher_fails_naming_it(tmp_path):
  with pytest.raises(errors.ConfigError, match="neither a .npz, a .msgpack export nor a workdir"):
    experiment.build(_config(tmp_path / "nothing"), dataset_info=INFO)


def test_temperature_must_be_positive(tmp_path):
  config = _config(tmp_path / "teacher.npz")
  config.distill.temperature = 0.0
  with pytest.raises(errors.ConfigError, match="distill.temperature must be positive, got 0.0"):
    experiment.build(config, dataset_info=INFO)



def _convolutions(jaxpr):
  """The convolutions of a jaxpr, nested calls included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield eqn
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      if hasattr(inner, "eqns"):
        yield from _convolutions(inner)


def test_the_teachers_run_in_the_students_compute_dtype(tmp_path):
  exp = experiment.build(_config(_teacher_npz(tmp_path / "teacher.npz"), model_dtype="bfloat16"),
                         mesh=TWO_DEVICES, dataset_info=INFO)
  traced = jax.make_jaxpr(lambda params, images: distill.teacher_probabilities(
      exp.teacher.models, params, images, 1.0))(exp.teacher.params, jnp.zeros((2, 16, 16, 3)))
  convolutions = list(_convolutions(traced.jaxpr))
  kernels = [leaf for leaf in jax.tree.leaves(exp.teacher.params) if leaf.ndim == 4]
  assert len(convolutions) == len(kernels)
  assert {str(v.aval.dtype) for eqn in convolutions for v in eqn.invars} == {"bfloat16"}
  # The stored teacher stays float32; its probabilities are float32 for the loss.
  assert {str(leaf.dtype) for leaf in jax.tree.leaves(exp.teacher.params)} == {"float32"}
  assert traced.out_avals[0].dtype == jnp.float32
