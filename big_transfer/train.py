"""The training loop: config -> input -> sharded state -> jitted steps -> metrics, checkpoints.

`train_and_evaluate(config, workdir)` runs BiT pre-training or fine-tuning on whatever devices
JAX sees. Rerunning it on the same workdir resumes from the latest complete checkpoint.
"""

import dataclasses
import functools
import json
import logging
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions
from etils import epath

from big_transfer import checkpoints, data, errors, evaluate, hyperrule, interop, models, optim
from big_transfer import sharding, steps, workdir_hold


@dataclasses.dataclass
class Run:
  """What the loop builds from the config before the first step."""
  mesh: jax.sharding.Mesh
  input_cfg: data.InputConfig
  model: models.ResNetV2
  optimizer: object
  schedule: object
  abstract_state: steps.TrainState
  state_shardings: object
  record: dict


def _build(config) -> Run:
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  sharding.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  input_cfg = data.InputConfig.from_config(config)
  info = data.dataset_info(input_cfg)
  num_classes = config.num_classes or info.num_classes
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(config.model_dtype)
  if dtype is None:
    raise errors.ConfigError(f"model_dtype must be 'float32' or 'bfloat16', got {config.model_dtype!r}.")
  model = models.create(config.model, num_classes=num_classes, dtype=dtype)
  schedule = hyperrule.step_decay_schedule(config.lr, config.warmup_steps,
                                           tuple(config.decay_steps))
  optimizer = optim.make_optimizer(schedule, config.momentum, config.weight_decay,
                                   config.grad_clip_norm)
  abstract = jax.eval_shape(functools.partial(
      steps.create_train_state, model=model, optimizer=optimizer,
      image_shape=(input_cfg.crop, input_cfg.crop, 3)), jax.random.key(0))
  # What produced the checkpoints: the identity keys checked on resume, and what an export
  # needs to describe the model (class names, resolution, the whole config).
  record = {"model": config.model, "num_classes": num_classes, "dataset": config.dataset,
            "seed": config.seed, "batch_size": config.batch_size, "loss": config.loss,
            "class_names": list(info.class_names) if info.class_names else None,
            "config": json.loads(config.to_json())}
  return Run(mesh, input_cfg, model, optimizer, schedule, abstract,
             sharding.param_shardings(abstract, mesh), record)


def _initial_state(config, run: Run):
  """A fresh state, with pretrained weights merged in when `config.init` names a file."""
  create = jax.jit(functools.partial(
      steps.create_train_state, model=run.model, optimizer=run.optimizer,
      image_shape=(run.input_cfg.crop, run.input_cfg.crop, 3)),
      out_shardings=run.state_shardings)
  state = create(jax.random.key(config.seed))
  if not config.init:
    return state
  pretrained = checkpoints.load_params(config.init)
  params, report = interop.merge_pretrained(jax.device_get(state.params), pretrained)
  logging.info("Initialized from %s:\n%s", config.init, report.summary())
  params = jax.device_put(params, run.state_shardings.params)
  opt_state = jax.jit(run.optimizer.init, out_shardings=run.state_shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state)


class _PreemptionWatch:
  """Tells when to save and stop because the job is being preempted (SIGTERM).

  On many processes JAX's preemption service catches SIGTERM and makes all hosts agree on the
  step (through orbax); a single process has no such service, so a signal handler sets a flag.
  """

  def __init__(self, ckpts: checkpoints.Checkpoints):
    self._ckpts = ckpts
    self._signalled = False
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    return self._signalled or self._ckpts.reached_preemption(step)


def _check_finite(state) -> None:
  bad = int(state.first_bad_step)
  if bad >= 0:
    raise errors.NonFiniteLossError(
        f"The loss became NaN or infinite at step {bad}; stopping without saving the bad state "
        "(the latest checkpoint holds the last good weights). Lower the learning rate or set "
        "--config.grad_clip_norm.")


def _write_json(path: epath.Path, content: dict) -> None:
  """Writes JSON atomically: a reader never sees a half-written summary."""
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_text(json.dumps(content, indent=2, sort_keys=True))
  tmp.replace(path)


def _evaluate(config, run: Run, params) -> dict:
  results = {}
  eval_cfg = dataclasses.replace(run.input_cfg, mixup_alpha=0.0)
  for key, value in evaluate.top1(params, run.model, eval_cfg, config.eval_batch_size, run.mesh,
                                  config.loss).items():
    results[f"eval/{key}"] = value
  if config.fewshot.datasets:
    fewshot_cfgs = {name: dataclasses.replace(eval_cfg, dataset=name, train_split="train",
                                              eval_split="test", examples_per_class=None,
                                              multilabel=False)
                    for name in config.fewshot.datasets}
    for key, value in evaluate.fewshot_probes(params, run.model, fewshot_cfgs,
                                              tuple(config.fewshot.shots),
                                              config.eval_batch_size, run.mesh).items():
      results[f"fewshot/{key}"] = value
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`_train_and_evaluate` while this job holds `workdir` (big_transfer.workdir_hold): a second
  job on the same workdir stops at once instead of mixing its checkpoints with this one's."""
  with workdir_hold.hold(workdir, config.hold_stale_after_s):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`, evaluates, and writes `workdir/summary.json`.

  Returns the summary: the last training metrics, the final evaluation and the run status.
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  run = _build(config)
  logging.info("Topology: %s", sharding.describe(run.mesh, config.batch_size,
                                                  config.grad_accum_steps))
  ckpts = checkpoints.Checkpoints(workdir, config.checkpoint_every_steps,
                                  config.keep_checkpoints, config.keep_checkpoint_every or None)
  restored = ckpts.restore(checkpoints.abstract_like(run.abstract_state, run.state_shardings))
  if restored is None:
    state = _initial_state(config, run)
    start = 0
  else:
    state, saved_record, start = restored
    checkpoints.check_same_experiment(saved_record, run.record)
    logging.info("Resuming from the checkpoint at step %d.", start)

  batch_sharding = sharding.batch_sharding(run.mesh)
  train_step = jax.jit(
      functools.partial(steps.train_step, model=run.model, optimizer=run.optimizer,
                        loss_name=config.loss, grad_accum_steps=config.grad_accum_steps),
      in_shardings=(run.state_shardings, batch_sharding),
      out_shardings=(run.state_shardings, sharding.replicated(run.mesh)), donate_argnums=0)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams({k: v for k, v in config.to_dict().items() if not isinstance(v, dict)})
  progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer,
                                             every_steps=config.log_every_steps)
  preemption = _PreemptionWatch(ckpts)
  batches = data.prefetch_to_mesh(
      data.train_batches(run.input_cfg, config.batch_size, config.seed, start_step=start),
      batch_sharding)

  try:
    summary = _loop(config, run, train_step, state, start, ckpts, batches, writer, progress,
                    preemption)
  finally:
    batches.close()  # Stops the prefetch thread before evaluation or interpreter exit.
    ckpts.wait()  # A save in flight completes even when the loop failed.
  if summary["status"] == "completed":
    results = _evaluate(config, run, summary.pop("state").params)
    writer.write_scalars(summary["step"], results)
    summary.update(results)
  else:
    summary.pop("state")
  ckpts.close()
  writer.flush()
  summary["config"] = config.to_dict()
  if jax.process_index() == 0:
    _write_json(workdir / "summary.json", summary)
  return summary


def _loop(config, run: Run, train_step, state, start: int, ckpts: checkpoints.Checkpoints,
          batches, writer, progress, preemption: _PreemptionWatch) -> dict:
  """Steps from `start` to `config.total_steps` or a preemption; returns the summary so far."""
  summary = {"status": "completed", "train": {}}
  pending, last_log = [], time.time()
  step = start
  while step < config.total_steps:
    state, metrics = train_step(state, next(batches))
    pending.append(metrics)
    step += 1
    progress(step)
    if step % config.log_every_steps == 0 or step == config.total_steps:
      _check_finite(state)
      now = time.time()
      means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
      means["learning_rate"] = float(run.schedule(step - 1))
      means["images_per_sec"] = len(pending) * config.batch_size / (now - last_log)
      writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
      summary["train"] = means
      pending, last_log = [], now
    if preemption.reached(step):
      _check_finite(state)
      ckpts.save(step, state, run.record, force=True)
      ckpts.wait()
      summary["status"] = "preempted"
      logging.warning("Preempted: saved the checkpoint at step %d; rerun the same command to "
                      "resume.", step)
      break
    if step % config.checkpoint_every_steps == 0 or step == config.total_steps:
      _check_finite(state)
      ckpts.save(step, state, run.record, force=step == config.total_steps)
    if (config.eval_every_steps and step % config.eval_every_steps == 0
        and step < config.total_steps):
      writer.write_scalars(step, _evaluate(config, run, state.params))
  summary.update(step=step, state=state)
  return summary

