"""Distillation: a student matches frozen BiT teachers' functions ("patient and consistent").

Beyer et al., "Knowledge distillation: A good teacher is patient and consistent" (CVPR 2022),
as big_vision's `proj/distill` trainer runs it: teacher and student see the very same augmented
batch (the input pipeline's inception crop, flip and MixUp happen before the step, so both
forward passes get one array), and the student minimizes

    t^2 * KL(softmax(teacher / t) || softmax(student / t))

with several teachers averaged in probability space. The teachers are frozen: their parameters
are an argument of the step, never part of the `TrainState`, so they are neither updated nor
written into checkpoints; the run record holds their paths and a hash of their weights, and a
resume with other weights is refused (`run_record.RunRecord.check_resumable_by`).

Teachers come from a published-layout `.npz` (or an `.npz` export), a run's workdir (its latest
checkpoint and the model its record names), or a `.msgpack` params export with its `.json`
metadata beside it. They run in the student's compute dtype and are laid out on the mesh by the
same rules as the student (`sharding.param_shardings`: FSDP for large teachers).
"""

import dataclasses
import functools
import hashlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_transfer import errors, models, sharding
from big_transfer.training import checkpoints, losses, steps, trained

# Separates the teachers of `config.distill.teacher`.
SEPARATOR = ";"


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The frozen teachers of a distillation run.

  Attributes:
    paths: where each teacher was read from, as the config gave them.
    models: one network per teacher, in the student's compute dtype.
    params: one float32 host params tree per teacher.
    shardings: one `NamedSharding` tree per teacher, laid out like the student's parameters.
    sha256: hash of all teachers' weights (`weights_sha256`).
  """
  paths: tuple[str, ...]
  models: tuple[models.ResNetV2, ...]
  params: tuple[dict, ...]
  shardings: tuple
  sha256: str

  def place(self) -> tuple:
    """The teachers' params on the mesh, the step's third argument."""
    return jax.device_put(self.params, self.shardings)

  def abstract(self) -> tuple:
    """ShapeDtypeStructs of `place()`, to compile the step without the weights on devices."""
    return checkpoints.abstract_like(self.params, self.shardings)


def check_temperature(temperature: float) -> None:
  if not temperature > 0:
    raise errors.ConfigError(f"distill.temperature must be positive, got {temperature} "
                             "(--config.distill.temperature; 1 is the recipe's default).")


def teacher_paths(spec: str) -> tuple[str, ...]:
  """The paths of `config.distill.teacher` ("PATH[;PATH...]"), in order."""
  return tuple(part.strip() for part in spec.split(SEPARATOR) if part.strip())


def load_teacher(spec: str, num_classes: int, dtype, mesh: jax.sharding.Mesh) -> Teacher:
  """Reads the teachers of `config.distill.teacher` ("PATH[;PATH...]").

  Args:
    spec: ';'-separated paths (local or gs://), each a `.npz`, a run's workdir or a `.msgpack`.
    num_classes: the student's head size; every teacher's head must have it.
    dtype: the student's compute dtype, which the teachers run in.
    mesh: the run's mesh.
  Raises:
    ConfigError naming the path for a teacher that cannot be read or does not fit.
  """
  paths = teacher_paths(spec)
  if not paths:
    raise errors.ConfigError(f"distill.teacher {spec!r} names no teacher; pass a .npz, a run's "
                             "workdir or a .msgpack export, several separated by ';'.")
  networks, params = [], []
  for path in paths:
    name, network, weights = _read_teacher(path)
    if network.num_classes != num_classes:
      raise errors.ConfigError(f"Teacher {path} ({name}) has {network.num_classes} classes, the "
                               f"student {num_classes}; distil on the data set the teacher was "
                               "trained or fine-tuned on.")
    networks.append(dataclasses.replace(network, dtype=dtype))
    params.append(weights)
  shardings = tuple(sharding.param_shardings(p, mesh) for p in params)
  return Teacher(paths, tuple(networks), tuple(params), shardings, weights_sha256(params))


def _read_teacher(path: str) -> tuple[str, models.ResNetV2, dict]:
  """(name for messages, network, float32 host params) of one teacher."""
  model = trained.read(path)
  if model is None:
    raise errors.ConfigError(f"Teacher {path} is neither a .npz, a .msgpack export nor a workdir "
                             "with checkpoints (a SavedModel cannot be a teacher: pass the run's "
                             "workdir or its .npz export).")
  if model.network.num_classes is None:
    raise errors.ConfigError(f"Teacher {path} has no head; a teacher must classify. Use a "
                             "fine-tuned .npz (e.g. BiT-M-R50x1-ILSVRC2012.npz) or an export.")
  return model.name, model.network, model.params


def weights_sha256(params: list[dict] | tuple[dict, ...]) -> str:
  """Hex SHA-256 of teachers' weights: every leaf's path, dtype, shape and bytes, in order."""
  digest = hashlib.sha256()
  for index, tree in enumerate(params):
    digest.update(f"teacher {index}\n".encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      leaf = np.ascontiguousarray(leaf)
      digest.update(f"{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.shape}\n".encode())
      digest.update(leaf.tobytes())
  return digest.hexdigest()


def teacher_probabilities(teachers: tuple[models.ResNetV2, ...], teacher_params: tuple,
                          images: jax.Array, temperature: float) -> jax.Array:
  """(B, K) float32: the mean over teachers of softmax(teacher logits / temperature).

  Gradients stop here: the teachers are constants of the student's loss.
  """
  probs = [jax.nn.softmax(model.apply({"params": p}, images).astype(jnp.float32) / temperature)
           for model, p in zip(teachers, teacher_params)]
  return jax.lax.stop_gradient(sum(probs) / len(probs))


def kl_per_example(student_logits: jax.Array, teacher_probs: jax.Array,
                   temperature: float = 1.0) -> jax.Array:
  """(B,) float32: KL(teacher_probs || softmax(student_logits / temperature)), in nats.

  Args:
    student_logits: (B, K) logits, any float dtype.
    teacher_probs: (B, K) probability rows (`teacher_probabilities`).
  """
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  # xlogy: a class the teachers give probability 0 contributes 0, not 0 * log 0 = nan.
  return jnp.sum(jax.scipy.special.xlogy(teacher_probs, teacher_probs)
                 - teacher_probs * log_student, axis=-1)


def distillation_loss(student_logits: jax.Array, teacher_probs: jax.Array,
                      temperature: float) -> jax.Array:
  """float32 scalar: t^2 * mean over the batch of KL(teacher || student at temperature t).

  The t^2 keeps the gradient's scale independent of t (Hinton et al.), as big_vision's `kl`.
  """
  return temperature ** 2 * jnp.mean(kl_per_example(student_logits, teacher_probs, temperature))


def train_step(state: steps.TrainState, batch: dict, teacher_params: tuple, *,
               student: models.ResNetV2, teachers: tuple[models.ResNetV2, ...],
               optimizer: optax.GradientTransformation,
               learning_rate: Callable[[jax.Array], jax.Array], temperature: float,
               grad_accum_steps: int = 1) -> tuple[steps.TrainState, dict]:
  """One update of the student towards the teachers on a global batch.

  Args:
    state: the student's `TrainState`.
    batch: {"image": (B, H, W, 3) float32, ...}: both teacher and student read `image`; labels
      are not used.
    teacher_params: one params tree per teacher (`Teacher.place()`), left unchanged.
    student, teachers: the networks.
    optimizer, learning_rate, grad_accum_steps: as `steps.descent_step`; with accumulation each
      micro-batch runs the teachers on its own images, so the teachers' activations are one
      micro-batch's too.
    temperature: t of the loss (`distillation_loss`).
  Returns:
    (new state, {"loss", "grad_norm", "learning_rate"}: float32 scalars).
  """
  def loss_of(params, micro):
    targets = teacher_probabilities(teachers, teacher_params, micro["image"], temperature)
    logits = student.apply({"params": params}, micro["image"])
    return distillation_loss(logits, targets, temperature)

  return steps.descent_step(state, batch, loss_of, optimizer=optimizer,
                            learning_rate=learning_rate, grad_accum_steps=grad_accum_steps)


def distance_sums(student_logits: jax.Array, teacher_probs: jax.Array,
                  mask: jax.Array) -> dict:
  """Sums over the real (mask 1) examples: what `evaluation.top1` turns into means.

  Args:
    student_logits: (B, K); teacher_probs: (B, K) at temperature 1; mask: (B,) 1 for a real
    example, 0 for padding.
  Returns:
    {"agree": examples whose student and teacher top-1 classes are the same, "kl": summed
    KL(teacher || student)}: float32 scalars.
  """
  agree = jnp.argmax(student_logits, axis=-1) == jnp.argmax(teacher_probs, axis=-1)
  return {"agree": jnp.sum(agree.astype(jnp.float32) * mask),
          "kl": jnp.sum(kl_per_example(student_logits, teacher_probs) * mask)}


def teacher_eval_step(teacher_params: tuple, batch: dict, *,
                      teachers: tuple[models.ResNetV2, ...]) -> tuple[jax.Array, dict]:
  """The teachers' side of an evaluation, which a run needs once (`evaluation.TeacherPredictions`).

  Args:
    batch: {"image": (B, H, W, 3), "label": (B, K) dense, "mask": (B,)}.
  Returns:
    ((B, K) float32 probabilities at temperature 1, {"teacher_correct": the teachers' top-1
    hits among the real examples, "count": real examples}: float32 scalars).
  """
  probs = teacher_probabilities(teachers, teacher_params, batch["image"], 1.0)
  mask = batch["mask"]
  return probs, {"teacher_correct": jnp.sum(losses.top1_correct(probs, batch["label"]) * mask),
                 "count": jnp.sum(mask)}


def eval_step(params, teacher_probs: jax.Array, batch: dict, *, student: models.ResNetV2,
              loss_name: str = "softmax_xent") -> dict:
  """`steps.eval_step`'s sums for the student and `distance_sums` against the teachers'
  probabilities (B, K) on the same batch (`teacher_eval_step`)."""
  logits = student.apply({"params": params}, batch["image"])
  mask = batch["mask"]
  count = jnp.sum(mask)
  return {"correct": jnp.sum(losses.top1_correct(logits, batch["label"]) * mask),
          "loss": steps.loss_function(loss_name)(logits, batch["label"], mask) * count,
          "count": count, **distance_sums(logits, teacher_probs, mask)}


def jit_steps(student: models.ResNetV2, teacher: Teacher, optimizer: optax.GradientTransformation,
              learning_rate: Callable[[jax.Array], jax.Array], mesh: jax.sharding.Mesh,
              state_shardings, temperature: float, grad_accum_steps: int,
              loss_name: str) -> tuple[Callable, Callable, Callable]:
  """(train, eval, teacher_eval) jitted with the state's, the teachers' and the batch's shardings.

  train: (state, batch, teacher params) -> (state, metrics); the state is donated, the
  teachers are not. eval: (params, teacher probabilities, batch with "mask") -> summed metrics.
  teacher_eval: (teacher params, batch with "mask") -> (teacher probabilities split like the
  batch, summed teacher top-1 hits).
  """
  batch = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  train = functools.partial(train_step, student=student, teachers=teacher.models,
                            optimizer=optimizer, learning_rate=learning_rate,
                            temperature=temperature, grad_accum_steps=grad_accum_steps)
  evaluate = functools.partial(eval_step, student=student, loss_name=loss_name)
  teacher_eval = functools.partial(teacher_eval_step, teachers=teacher.models)
  return (jax.jit(train, in_shardings=(state_shardings, batch, teacher.shardings),
                  out_shardings=(state_shardings, replicated), donate_argnums=0),
          jax.jit(evaluate, in_shardings=(state_shardings.params, batch, batch),
                  out_shardings=replicated),
          jax.jit(teacher_eval, in_shardings=(teacher.shardings, batch),
                  out_shardings=(batch, replicated)))
