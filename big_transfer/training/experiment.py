"""What a run is made of, built once from its config before the first step.

`build(config)` resolves a run config into the mesh, the input, the model, the optimizer and its
schedule, the state's shardings, the run record, and the steps of `steps.py` jitted with those
shardings (`jit_steps`): everything the training loop, evaluation, the benchmarks and the
pre-flight compile share, so each of them runs the same programs.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import ml_collections
import optax

from big_transfer import data, models, sharding
from big_transfer.recipes import schema as config_lib
from big_transfer.training import distill, optim, run_record, steps


@dataclasses.dataclass(frozen=True)
class JittedSteps:
  """The steps of a run, each jitted once with the run's shardings.

  Attributes:
    create: rng key -> a fresh `TrainState`, laid out by the state shardings.
    train: (state, batch, *frozen) -> (state, metrics); the state is donated. `frozen` is
      `Experiment.frozen_inputs()`: the teachers' params of a distillation run, else nothing.
    eval: (params, batch with "mask") -> summed {"correct", "loss", "count"}, replicated; in a
      distillation run (params, teacher probabilities, batch) -> those and
      `distill.distance_sums`.
    features: (params, images (B, H, W, 3)) -> pre-logits features (B, D), split like the batch.
    logits: (params, images (B, H, W, 3)) -> logits (B, K), split like the batch (evaluators).
    teacher_eval: a distillation run's (teacher params, batch with "mask") -> (teacher
      probabilities (B, K) split like the batch, summed teacher top-1 hits), else None.
  """
  create: Callable
  train: Callable
  eval: Callable
  features: Callable
  logits: Callable
  teacher_eval: Callable | None = None


def jit_steps(model: models.ResNetV2, optimizer: optax.GradientTransformation,
              schedule: optim.Schedule, mesh: jax.sharding.Mesh, state_shardings,
              loss_name: str, grad_accum_steps: int,
              image_shape: tuple[int, int, int]) -> JittedSteps:
  """Jits the steps of `steps.py` with the state's and the batch's shardings on `mesh`."""
  batch = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  create = functools.partial(steps.create_train_state, model=model, optimizer=optimizer,
                             image_shape=image_shape)
  train = functools.partial(
      steps.train_step, model=model, optimizer=optimizer, learning_rate=schedule.learning_rate,
      loss_name=loss_name, grad_accum_steps=grad_accum_steps)
  evaluate = functools.partial(steps.eval_step, model=model, loss_name=loss_name)
  features = functools.partial(steps.features_step,
                               model=dataclasses.replace(model, num_classes=None))
  params = state_shardings.params
  return JittedSteps(
      create=jax.jit(create, out_shardings=state_shardings),
      train=jax.jit(train, in_shardings=(state_shardings, batch),
                    out_shardings=(state_shardings, replicated), donate_argnums=0),
      eval=jax.jit(evaluate, in_shardings=(params, batch), out_shardings=replicated),
      features=jax.jit(features, in_shardings=(params, batch), out_shardings=batch),
      logits=jit_logits(model, params, batch))


def jit_logits(model: models.ResNetV2, param_shardings, batch_sharding) -> Callable:
  """`steps.logits_step` of `model`, jitted with the params' and the batch's shardings."""
  return jax.jit(functools.partial(steps.logits_step, model=model),
                 in_shardings=(param_shardings, batch_sharding), out_shardings=batch_sharding)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A run config resolved into what the loop needs.

  Attributes:
    config: the run config.
    mesh: the device mesh.
    input_cfg: what to read and how (`data.InputConfig.from_config(config)`).
    dataset_info: facts of the training data (classes, size).
    model: the network.
    schedule: the resolved learning-rate schedule.
    optimizer: the update direction (SGD momentum, decay, clipping).
    abstract_state: shapes and dtypes of the `TrainState`.
    state_shardings: a `NamedSharding` per leaf of the state.
    record: what produced the run's checkpoints.
    steps: the jitted steps.
    teacher: the frozen teachers of a distillation run (`config.distill.teacher`), or None.
  """
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  input_cfg: data.InputConfig
  dataset_info: data.DatasetInfo
  model: models.ResNetV2
  schedule: optim.Schedule
  optimizer: optax.GradientTransformation
  abstract_state: steps.TrainState
  state_shardings: steps.TrainState
  record: run_record.RunRecord
  steps: JittedSteps
  teacher: distill.Teacher | None = None

  @property
  def batch_sharding(self) -> jax.sharding.NamedSharding:
    return sharding.batch_sharding(self.mesh)

  def frozen_inputs(self, abstract: bool = False) -> tuple:
    """The train and eval steps' arguments that never change: (teacher params,) on the mesh for
    a distillation run, () otherwise; `abstract` gives ShapeDtypeStructs (a compile only)."""
    if self.teacher is None:
      return ()
    return (self.teacher.abstract() if abstract else self.teacher.place(),)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None,
          dataset_info: data.DatasetInfo | None = None) -> Experiment:
  """Resolves `config`; raises a ConfigError/DataError for anything that cannot run.

  Args:
    config: a run config (`config.base()` and a recipe's overrides).
    mesh: the devices to run on; by default `config.mesh` over every device of the job.
    dataset_info: facts of the training data when the data is not at hand (a pre-flight
      compile for another machine); by default read from the data.
  """
  # What the config alone decides first, so a bad value fails before any data is read.
  config_lib.check(config)
  schedule = optim.Schedule.from_config(config)
  steps.loss_function(config.loss)
  dtype = models.dtype_named(config.model_dtype)
  models.parse_name(config.model)
  optimizer = optim.optimizer_from_config(config)
  input_cfg = data.InputConfig.from_config(config)
  if mesh is None:
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  sharding.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  sharding.check_eval_batch_size(config.eval_batch_size, mesh)
  info = dataset_info or data.dataset_info(input_cfg)
  num_classes = config.num_classes or info.num_classes
  model = models.create(config.model, num_classes=num_classes, dtype=dtype,
                        head_bias_init=config.head_bias_init, remat=config.remat)
  image_shape = (input_cfg.crop, input_cfg.crop, 3)
  abstract_state = jax.eval_shape(functools.partial(
      steps.create_train_state, model=model, optimizer=optimizer, image_shape=image_shape),
      jax.random.key(0))
  state_shardings = sharding.param_shardings(abstract_state, mesh)
  state_dtypes = " ".join(sorted({str(leaf.dtype) for leaf in
                                  jax.tree.leaves(abstract_state.params)}))
  jitted = jit_steps(model, optimizer, schedule, mesh, state_shardings, config.loss,
                     config.grad_accum_steps, image_shape)
  teacher = None
  if config.distill.teacher:
    distill.check_temperature(config.distill.temperature)
    teacher = distill.load_teacher(config.distill.teacher, num_classes, dtype, mesh)
    train, evaluate, teacher_eval = distill.jit_steps(
        model, teacher, optimizer, schedule.learning_rate, mesh, state_shardings,
        config.distill.temperature, config.grad_accum_steps, config.loss)
    jitted = dataclasses.replace(jitted, train=train, eval=evaluate, teacher_eval=teacher_eval)
  record = run_record.RunRecord.of_run(
      config, num_classes, info.class_names, state_dtypes,
      **({} if teacher is None else dict(teacher=teacher.paths, teacher_sha256=teacher.sha256)))
  return Experiment(config, mesh, input_cfg, info, model, schedule, optimizer, abstract_state,
                    state_shardings, record, jitted, teacher)


def train_step_flops(compiled: jax.stages.Compiled, grad_accum_steps: int) -> float:
  """Floating-point operations of one step of `compiled` on one device.

  XLA's cost analysis counts the body of a loop once, and the accumulation loop (`lax.scan`)
  runs grad_accum_steps times; multiplying the whole count also multiplies the once-per-step
  update, a small part of a real model's step.
  """
  return compiled.cost_analysis()["flops"] * grad_accum_steps
